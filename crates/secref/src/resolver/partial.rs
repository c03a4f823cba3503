//! Batch outcomes: [`Partial`] and the all-or-nothing error that names
//! every failure.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::reference::SecretRef;

/// The outcome of a partial batch: what resolved and what failed.
#[derive(Debug)]
pub struct Partial<T> {
    /// Successful results by reference.
    pub resolved: BTreeMap<SecretRef, T>,
    /// Failures by reference, each with its code and retryable flag.
    pub failures: BTreeMap<SecretRef, Error>,
}

impl<T> Partial<T> {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Turns the batch into all-or-nothing: the values, or one error naming
    /// every failure.
    pub fn into_result(self) -> Result<BTreeMap<SecretRef, T>> {
        if self.failures.is_empty() {
            return Ok(self.resolved);
        }
        Err(aggregate(
            self.failures.into_values().collect(),
            self.resolved.len(),
        ))
    }
}

pub(super) fn aggregate(failures: Vec<Error>, ok: usize) -> Error {
    if failures.len() == 1 && ok == 0 {
        return failures.into_iter().next().expect("one failure");
    }
    let total = failures.len() + ok;
    let retryable = failures.iter().all(Error::retryable);
    let list: Vec<String> = failures
        .iter()
        .map(|e| {
            format!(
                "{} → {}{}",
                e.reference().unwrap_or("?"),
                e.code(),
                if e.retryable() { " (retryable)" } else { "" }
            )
        })
        .collect();
    Error::new(
        failures[0].code(),
        format!(
            "{} of {} references failed: {}",
            failures.len(),
            total,
            list.join("; ")
        ),
    )
    .with_retryable(retryable)
}

pub(super) fn partial<T>(refs: Vec<SecretRef>, res: Vec<Result<T>>) -> Partial<T> {
    let mut out = Partial {
        resolved: BTreeMap::new(),
        failures: BTreeMap::new(),
    };
    for (r, x) in refs.into_iter().zip(res) {
        match x {
            Ok(v) => {
                out.resolved.insert(r, v);
            }
            Err(e) => {
                out.failures.insert(r, e);
            }
        }
    }
    out
}
