//! A node at its limit of calls in flight answers `RESOURCE_EXHAUSTED` with a retry-after
//! hint: the client waits at least that long, and retries even a write without a token,
//! since such a refusal comes before any work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, ClientOptions, ErrorKind};
use proto::v1 as pb;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};

const HINT_MS: u64 = 40;

/// Answers every call as an overloaded node does, counting them.
#[derive(Clone)]
struct Overloaded(Arc<AtomicUsize>);

impl tonic::server::NamedService for Overloaded {
    const NAME: &'static str = "keyquorum.v1.Kms";
}

impl Service<http::Request<tonic::body::Body>> for Overloaded {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut status = tonic::Status::resource_exhausted("node 1 is serving its limit of 1 calls at once");
        status.metadata_mut().insert(proto::RETRY_AFTER_MS, HINT_MS.to_string().parse().unwrap());
        Box::pin(async move { Ok(status.into_http()) })
    }
}

#[tokio::test]
async fn an_overloaded_node_is_retried_after_its_hint_even_for_an_untokened_write() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = tonic::transport::Server::builder()
        .add_service(Overloaded(calls.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let options = ClientOptions {
        discover: false,
        call_timeout: Duration::from_millis(HINT_MS * 6),
        backoff_base: Duration::from_millis(1),
        ..ClientOptions::default()
    };
    let c = Client::with_options(&[addr.to_string().as_str()], None, options).unwrap();
    let started = Instant::now();
    // CreateAlias carries no token: after an answer that may have done something it would
    // not be retried; this answer says nothing was done.
    let err = c.create_alias(pb::CreateAliasRequest { alias: "a".into(), key: "k".into() }).await.unwrap_err();
    let attempts = calls.load(Ordering::SeqCst);
    assert!(attempts >= 2, "retried: {attempts} attempts, {err:?}");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Retry, "an overloaded node did nothing: {err:?}");
    assert!(!err.message().contains("may or may not"), "{err:?}");
    // Each retry waited at least the hint.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(HINT_MS * (attempts as u64 - 1)), "{attempts} attempts in {waited:?}");
    server.abort();
}
