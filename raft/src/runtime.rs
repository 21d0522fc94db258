//! openraft's async runtime for keyquorum: tokio, with one difference — the random numbers
//! openraft draws (its election-timeout jitter) come from a thread-local ChaCha stream that
//! the simulator can seed, instead of `rand::thread_rng`.
//!
//! Production threads seed their stream from the OS on first use. The simulator runs a whole
//! cluster on one thread and calls [`seed_thread_rng`] before it starts, so every election
//! timeout is a function of the run's seed.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::{AsyncRuntime, TokioOneShotSender};
use openraft::{OptionalSend, TokioInstant};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static RNG: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Seeds this thread's raft RNG. The simulator calls it once per run, before any node starts.
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = Some(ChaCha8Rng::seed_from_u64(seed)));
}

fn with_rng<T>(f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
    RNG.with(|r| f(r.borrow_mut().get_or_insert_with(ChaCha8Rng::from_entropy)))
}

/// A handle to this thread's raft RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftRng;

impl RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|r| r.next_u32())
    }
    fn next_u64(&mut self) -> u64 {
        with_rng(|r| r.next_u64())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|r| r.fill_bytes(dest))
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        with_rng(|r| r.try_fill_bytes(dest))
    }
}

/// openraft's tokio runtime with a seedable RNG.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KqRuntime;

impl AsyncRuntime for KqRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = RaftRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        RaftRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_seeded_stream_replays() {
        seed_thread_rng(7);
        let a: Vec<u64> = (0..4).map(|_| RaftRng.next_u64()).collect();
        seed_thread_rng(7);
        let b: Vec<u64> = (0..4).map(|_| RaftRng.next_u64()).collect();
        assert_eq!(a, b);
        seed_thread_rng(8);
        assert_ne!(a[0], RaftRng.next_u64());
    }
}
