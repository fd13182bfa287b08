//! Running many lookups over one [`Transport`]: up to `concurrency` in flight,
//! bounded retries with exponential backoff and jitter (honouring
//! `Retry-After` up to a cap), one deadline per lookup covering its retries,
//! and a stop when the quota runs out. Pure: time comes from the transport.

use crate::error::{Error, parse_retry_after};
use crate::request::HttpRequest;
use crate::transport::{HttpResponse, Limits, SendError, Ticket, Transport};

/// How a batch is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests in flight at once (at least 1).
    pub concurrency: u32,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Limit of one lookup with all its retries, ms.
    pub deadline_ms: u32,
    /// First backoff, ms; doubled per retry.
    pub backoff_base_ms: u32,
    /// Longest backoff, ms.
    pub backoff_cap_ms: u32,
    /// Longest `Retry-After` honoured, ms; a longer one ends the lookup at once.
    pub retry_after_cap_ms: u32,
}

/// What the caller wants after seeing a final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Carry on.
    Continue,
    /// The quota is used up: start nothing more.
    StopQuota,
}

/// The excerpt of the quota error of a lookup never sent because the quota
/// ran out earlier in its batch.
pub const NOT_SENT: &str = "not sent: the quota ran out earlier in this batch";

/// Whether a status is worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

struct Job {
    request: HttpRequest,
    attempts: u32,
    not_before: u64,
    deadline: u64,
    ticket: Option<Ticket>,
    done: bool,
}

/// Runs `requests`; `on_final(index, outcome)` sees each lookup's final
/// outcome once (a response, possibly an error status after the retries ran
/// out, or an error) and says whether to go on. Lookups never started because
/// of a quota stop get [`Error::QuotaExceeded`].
pub fn run(
    transport: &mut dyn Transport,
    requests: Vec<HttpRequest>,
    limits: Limits,
    policy: Policy,
    on_final: &mut dyn FnMut(usize, Result<HttpResponse, Error>) -> Next,
) {
    let now = transport.now_ms();
    let mut jobs: Vec<Job> = requests
        .into_iter()
        .map(|request| Job {
            request,
            attempts: 0,
            not_before: now,
            deadline: now.saturating_add(u64::from(policy.deadline_ms)),
            ticket: None,
            done: false,
        })
        .collect();
    let concurrency = policy.concurrency.max(1) as usize;
    let mut stopped = false;
    let mut remaining = jobs.len();

    while remaining > 0 {
        let now = transport.now_ms();
        let mut in_flight = jobs.iter().filter(|j| j.ticket.is_some()).count();
        if stopped {
            for (index, job) in jobs.iter_mut().enumerate() {
                if !job.done && job.ticket.is_none() {
                    job.done = true;
                    remaining -= 1;
                    let error = Error::QuotaExceeded {
                        excerpt: NOT_SENT.into(),
                    };
                    on_final(index, Err(error));
                }
            }
            if remaining == 0 {
                break;
            }
        } else {
            for job in jobs.iter_mut() {
                if in_flight >= concurrency {
                    break;
                }
                if job.done || job.ticket.is_some() || job.not_before > now {
                    continue;
                }
                let left = job.deadline.saturating_sub(now);
                let capped = limits.capped(u32::try_from(left).unwrap_or(u32::MAX));
                job.attempts += 1;
                job.ticket = Some(transport.start(&job.request, &capped));
                in_flight += 1;
            }
        }
        // Wake for the earliest backoff still to run out (if nothing is in
        // flight the transport sleeps until then). Jobs that could start now
        // but found no free slot need no wake: a finishing request frees one.
        let wake = if stopped {
            None
        } else {
            jobs.iter()
                .filter(|j| !j.done && j.ticket.is_none() && j.not_before > now)
                .map(|j| j.not_before)
                .min()
        };
        if in_flight == 0 && wake.is_none() {
            break;
        }
        for (ticket, outcome) in transport.wait(wake) {
            let Some(index) = jobs.iter().position(|j| j.ticket == Some(ticket)) else {
                continue;
            };
            let now = transport.now_ms();
            let delay = retry_delay(transport, &jobs, index, &outcome, policy, now);
            let Some(job) = jobs.get_mut(index) else {
                continue;
            };
            job.ticket = None;
            if let Some(delay) = delay {
                job.not_before = now.saturating_add(delay);
                continue;
            }
            job.done = true;
            remaining -= 1;
            let outcome = outcome.map_err(|e| e.error);
            if on_final(index, outcome) == Next::StopQuota {
                stopped = true;
            }
        }
    }
}

/// The wait before another attempt, or `None` when the outcome is final.
fn retry_delay(
    transport: &mut dyn Transport,
    jobs: &[Job],
    index: usize,
    outcome: &Result<HttpResponse, SendError>,
    policy: Policy,
    now: u64,
) -> Option<u64> {
    let job = jobs.get(index)?;
    if job.attempts > policy.retries {
        return None;
    }
    let jitter = transport.random_u64();
    let backoff = || {
        let exp = policy.backoff_base_ms.saturating_mul(
            1u32.checked_shl(job.attempts.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let full = u64::from(exp.min(policy.backoff_cap_ms)).max(1);
        // "Equal jitter": between half and all of the exponential delay.
        full / 2 + jitter % (full / 2 + 1)
    };
    let delay = match outcome {
        Ok(response) if retryable_status(response.status) => {
            match response
                .header("retry-after")
                .and_then(|v| parse_retry_after(v, transport.now_unix_secs()))
            {
                Some(secs) => {
                    let ms = u64::from(secs) * 1000;
                    if ms > u64::from(policy.retry_after_cap_ms) {
                        return None;
                    }
                    ms
                }
                None => backoff(),
            }
        }
        Err(e) if e.retryable => backoff(),
        _ => return None,
    };
    // A retry that cannot start before the deadline is pointless.
    (now.saturating_add(delay) < job.deadline).then_some(delay)
}
