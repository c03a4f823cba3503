-- wrk script: SecFlow resolve:batch of N `env://` refs per request.
-- WRK_TOKEN: the bearer token; WRK_ITEMS: refs per request (default 1);
-- the server needs env vars BENCH_0..BENCH_{N-1} and a rule allowing them.
local token = os.getenv("WRK_TOKEN") or ""
local n = tonumber(os.getenv("WRK_ITEMS") or "1")
local items = {}
for i = 0, n - 1 do
  items[#items + 1] = string.format('{"item_id":"i%d","secret_ref":"env://BENCH_%d"}', i, i)
end
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"target_environment":"dev","purpose":"secret.runtime_resolve","items":['
  .. table.concat(items, ",") .. ']}'
-- Any non-2xx answer is counted by wrk as "Non-2xx or 3xx responses".
