//! Deadlines and a size cap for what a client sends, so that a slow or
//! stalled client costs a connection and a timer, never a request slot.
//!
//! - [`Bounded`] wraps any [`Body`] (hyper's incoming body, or anything else)
//!   and ends it with a [`BodyError`] when the whole body is not over by a
//!   total deadline, when no frame comes within an idle gap, or when more data
//!   bytes come than a cap (a declared `Content-Length` over the cap fails
//!   before anything is read). Frames pass through unchanged, so a proxy that
//!   streams a request body onwards can forward a `Bounded` as it is.
//! - [`collect`] reads a whole body through a `Bounded` into memory: what
//!   `tip-enrich serve` does before it takes a slot or makes an instance.
//! - [`TokioTimer`] is the [`hyper::rt::Timer`] that hyper's own deadlines
//!   (`http1::Builder::header_read_timeout`) need, on tokio's clock.
//!
//! The deadlines run on tokio's timer: create a `Bounded` inside a tokio
//! runtime with the time driver enabled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep, sleep_until};

/// What a body may take. `None` leaves that limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The whole body must be over within this long after [`Bounded::new`].
    pub total: Option<Duration>,
    /// At most this long between two frames (and before the first).
    pub idle: Option<Duration>,
    /// At most this many data bytes (trailers not counted).
    pub max_bytes: Option<u64>,
}

/// Why a bounded body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    /// Not over by the total deadline.
    #[error("the body was not complete within {} s", .0.as_secs_f64())]
    Deadline(Duration),
    /// No frame for the idle gap.
    #[error("no body data for {} s", .0.as_secs_f64())]
    Idle(Duration),
    /// More than the cap, declared or sent.
    #[error("the body is over {0} bytes")]
    TooLarge(u64),
    /// The inner body failed (the client went away, bad chunked framing, ...).
    #[error("reading the body failed: {0}")]
    Read(E),
}

/// A body that fails at its [`Limits`]; see the module docs. After an error
/// it ends (`None`), so a consumer that goes on polling sees no more data.
pub struct Bounded<B> {
    inner: B,
    limits: Limits,
    total: Option<Pin<Box<Sleep>>>,
    idle: Option<Pin<Box<Sleep>>>,
    seen: u64,
    checked_hint: bool,
    ended: bool,
}

impl<B> Bounded<B> {
    /// Wraps `inner`; the total deadline and the first idle gap start now.
    pub fn new(inner: B, limits: Limits) -> Bounded<B> {
        Bounded {
            inner,
            limits,
            total: limits.total.map(|d| Box::pin(sleep(d))),
            idle: limits.idle.map(|d| Box::pin(sleep(d))),
            seen: 0,
            checked_hint: false,
            ended: false,
        }
    }

    fn fail<D, E>(&mut self, error: BodyError<E>) -> Poll<Option<Result<D, BodyError<E>>>> {
        self.ended = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> Body for Bounded<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = BodyError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.checked_hint {
            this.checked_hint = true;
            if let Some(max) = this.limits.max_bytes
                && this.inner.size_hint().lower() > max
            {
                return this.fail(BodyError::TooLarge(max));
            }
        }
        // The total deadline first, so a body that always has a frame ready
        // is still cut off at it.
        if let (Some(timer), Some(total)) = (this.total.as_mut(), this.limits.total)
            && timer.as_mut().poll(cx).is_ready()
        {
            return this.fail(BodyError::Deadline(total));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.remaining()).unwrap_or(u64::MAX);
                    this.seen = this.seen.saturating_add(len);
                    if let Some(max) = this.limits.max_bytes
                        && this.seen > max
                    {
                        return this.fail(BodyError::TooLarge(max));
                    }
                }
                if let (Some(timer), Some(gap)) = (this.idle.as_mut(), this.limits.idle) {
                    timer.as_mut().reset(Instant::now() + gap);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Read(e)),
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let (Some(timer), Some(gap)) = (this.idle.as_mut(), this.limits.idle)
                    && timer.as_mut().poll(cx).is_ready()
                {
                    return this.fail(BodyError::Idle(gap));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads all of `body` into memory within `limits`.
pub async fn collect<B>(body: B, limits: Limits) -> Result<Bytes, BodyError<B::Error>>
where
    B: Body + Unpin,
{
    Ok(Bounded::new(body, limits).collect().await?.to_bytes())
}

/// hyper's [`hyper::rt::Timer`] on tokio's clock (what `hyper-util`'s
/// `TokioTimer` does, without that dependency).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

struct TokioSleep(Pin<Box<Sleep>>);

impl Future for TokioSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for TokioSleep {}

impl hyper::rt::Timer for TokioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TokioSleep(Box::pin(sleep(duration))))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TokioSleep(Box::pin(sleep_until(deadline.into()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    type Item = Result<Frame<Bytes>, String>;

    /// A body fed by hand through a channel; it ends when the sender drops.
    struct Frames(UnboundedReceiver<Item>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = String;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
            self.0.poll_recv(cx)
        }
    }

    fn channel() -> (UnboundedSender<Item>, Frames) {
        let (tx, rx) = unbounded_channel();
        (tx, Frames(rx))
    }

    fn data(s: &'static str) -> Item {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn a_complete_body_within_the_limits_is_collected() {
        let limits = Limits {
            total: Some(Duration::from_secs(60)),
            idle: Some(Duration::from_secs(60)),
            max_bytes: Some(5),
        };
        let (tx, body) = channel();
        tx.send(data("ab")).unwrap();
        tx.send(data("cde")).unwrap();
        drop(tx);
        assert_eq!(collect(body, limits).await.unwrap(), "abcde");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_the_total_deadline() {
        let limits = Limits {
            total: Some(Duration::from_secs(30)),
            ..Limits::default()
        };
        let (tx, body) = channel();
        tx.send(data("a few bytes")).unwrap();
        let e = collect(body, limits).await.unwrap_err();
        assert!(matches!(e, BodyError::Deadline(d) if d == Duration::from_secs(30)));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_with_short_gaps_still_fails_at_the_total_deadline() {
        let limits = Limits {
            total: Some(Duration::from_secs(5)),
            idle: Some(Duration::from_secs(2)),
            max_bytes: None,
        };
        let (tx, body) = channel();
        let feeder = tokio::spawn(async move {
            // A byte a second, for longer than the deadline.
            for _ in 0..60 {
                if tx.send(data("x")).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let e = collect(body, limits).await.unwrap_err();
        assert!(matches!(e, BodyError::Deadline(_)), "{e}");
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_longer_than_the_idle_limit_fails() {
        let limits = Limits {
            total: None,
            idle: Some(Duration::from_secs(2)),
            max_bytes: None,
        };
        let (tx, body) = channel();
        let feeder = tokio::spawn(async move {
            for gap in [1, 1, 1, 3] {
                let _ = tx.send(data("x"));
                tokio::time::sleep(Duration::from_secs(gap)).await;
            }
            let _ = tx.send(data("late"));
        });
        let mut bounded = Bounded::new(body, limits);
        let mut frames = 0;
        let e = loop {
            match bounded.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => break e,
                None => panic!("the body ended without the idle error"),
            }
        };
        assert!(matches!(e, BodyError::Idle(_)), "{e}");
        assert_eq!(frames, 4, "the gaps of 1 s passed");
        assert!(bounded.frame().await.is_none(), "nothing after the error");
        feeder.abort();
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_fails_before_reading() {
        let limits = Limits {
            max_bytes: Some(4),
            ..Limits::default()
        };
        let e = collect(Full::new(Bytes::from_static(b"12345")), limits)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(4)));
    }

    #[tokio::test]
    async fn data_over_the_cap_fails_at_the_cap() {
        let limits = Limits {
            max_bytes: Some(4),
            ..Limits::default()
        };
        let (tx, body) = channel();
        tx.send(data("123")).unwrap();
        tx.send(data("45")).unwrap();
        let e = collect(body, limits).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(4)));
        drop(tx);
    }

    #[tokio::test]
    async fn an_error_of_the_inner_body_is_passed_on() {
        let (tx, body) = channel();
        tx.send(data("1")).unwrap();
        tx.send(Err("reset".into())).unwrap();
        let e = collect(body, Limits::default()).await.unwrap_err();
        assert!(matches!(e, BodyError::Read(ref s) if s == "reset"), "{e}");
    }
}
