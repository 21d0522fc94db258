//! Multi-region on real processes through the WAN relay (latency between regions, one node per
//! region): the topology a client discovers; a client whose region dies keeps working through
//! the others; a client in a follower region reads linearizably (sees a write made just before
//! in another region) and within a staleness bound, and gets a clear error when its node has
//! not heard from a leader within the bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use client::{pb, ClientOptions};
use common::*;
use tonic::Code;

/// One way between two regions.
const LATENCY_MS: u64 = 20;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

/// A client in region `index` (it connects from that region's addresses), starting from `ids`.
fn client_in(cluster: &Cluster, index: usize, ids: &[u64]) -> client::Client {
    let options = ClientOptions {
        region: Some(wan_region(index)),
        local_address: Some(wan_client_ip(index)),
        ..ClientOptions::default()
    };
    cluster.client_with(ids, options)
}

async fn describe(
    c: &client::Client,
    key: &str,
    consistency: Option<pb::consistency::Level>,
) -> Result<pb::KeyMetadata, tonic::Status> {
    let req = pb::DescribeKeyRequest {
        key: key.into(),
        consistency: consistency.map(|l| pb::Consistency { level: Some(l) }),
    };
    c.describe_key(req).await.map(|r| r.key.unwrap()).map_err(Into::into)
}

fn bounded_staleness(ms: u64) -> Option<pb::consistency::Level> {
    bounded_staleness_or(ms, pb::OnStale::Error)
}

fn bounded_staleness_or(ms: u64, on_stale: pb::OnStale) -> Option<pb::consistency::Level> {
    Some(pb::consistency::Level::BoundedStaleness(pb::BoundedStaleness {
        max_staleness_ms: ms,
        on_stale: on_stale.into(),
    }))
}

/// A Kms client straight to node `id`, from region `region_index`, with no client library in
/// between (which would follow a leader hint elsewhere).
fn direct(cluster: &Cluster, id: u64, region_index: usize) -> pb::kms_client::KmsClient<tonic::transport::Channel> {
    let channel = client::endpoint(&cluster.addrs[&id], Some(&cluster.credentials("client")))
        .unwrap()
        .local_address(Some(wan_client_ip(region_index)))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    pb::kms_client::KmsClient::new(channel)
}

async fn ask_describe(
    node: &pb::kms_client::KmsClient<tonic::transport::Channel>,
    key_id: &str,
    consistency: Option<pb::consistency::Level>,
) -> Result<pb::KeyResponse, tonic::Status> {
    let req = pb::DescribeKeyRequest {
        key: key_id.to_string(),
        consistency: consistency.map(|l| pb::Consistency { level: Some(l) }),
    };
    node.clone().describe_key(req).await.map(|r| r.into_inner())
}

async fn transfer_to(cluster: &Cluster, id: u64) {
    let c = cluster.admin();
    eventually(&format!("node {id} leads"), || {
        let c = &c;
        async move {
            c.transfer_leader(pb::TransferLeaderRequest { id }).await?;
            match cluster.local_status(id).await? {
                s if s.role == "leader" => Ok(()),
                _ => Err(tonic::Status::unavailable("not yet")),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_working_when_its_region_dies() {
    bounded(async {
        let mut cluster = Cluster::start_wan(3, 3, LATENCY_MS).await;
        cluster.init().await;
        // Leadership in region b, so losing region a does not also cost an election.
        transfer_to(&cluster, 2).await;

        // A client in region a that knows only region a's node discovers the others.
        let c = client_in(&cluster, 0, &[1]);
        c.discover().await.unwrap();
        let regions = c.regions();
        assert_eq!(regions.len(), 3, "{regions:?}");
        for id in 1..=3u64 {
            let region = regions.iter().find(|(a, _)| *a == cluster.addrs[&id]).and_then(|(_, r)| r.clone());
            assert_eq!(region, Some(cluster.region_of(id)), "{regions:?}");
        }
        assert_eq!(c.endpoints()[0], cluster.addrs[&1], "own region first");

        // The topology answer itself: every member, its region, role and health.
        let t = c.get_topology(pb::GetTopologyRequest {}).await.unwrap();
        assert_eq!(t.leader_id, 2);
        assert!(t.placement_warnings.is_empty(), "{:?}", t.placement_warnings);
        assert!(t.from_leader, "a follower asks the leader for health");
        assert!(
            t.members.iter().all(|m| m.health == pb::Health::Healthy as i32),
            "every member is healthy: {:?}",
            t.members
        );

        let key = create_key(&c, "wan-demo", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let sealed = encrypt(&c, &key.key_id, b"across regions", &[("app", "wan")]).await.unwrap();

        // Region a dies.
        cluster.kill(1);
        let killed = tokio::time::Instant::now();
        let plain = decrypt(&c, &sealed.ciphertext, &[("app", "wan")]).await.unwrap();
        eprintln!("first call after region a died succeeded after {:?}", killed.elapsed());
        assert_eq!(plain.plaintext, b"across regions");
        // Writes and crypto keep working through regions b and c.
        let other = create_key(&c, "wan-after", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        encrypt(&c, &other.key_id, b"still here", &[]).await.unwrap();
        let t = c.get_topology(pb::GetTopologyRequest {}).await.unwrap();
        let dead = t.members.iter().find(|m| m.id == 1).unwrap();
        // The leader stops hearing from node 1 within its election timeout.
        assert_ne!(dead.health, pb::Health::Unknown as i32);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_region_reads_linearizably_and_within_its_bound() {
    bounded(async {
        let cluster = Cluster::start_wan(3, 3, LATENCY_MS).await;
        cluster.init().await;
        transfer_to(&cluster, 1).await;
        let writer = client_in(&cluster, 1, &[2]);
        let reader = client_in(&cluster, 2, &[3]);
        let key = create_key(&writer, "follower-reads", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        for i in 0..5 {
            // A rotation acknowledged in region b is seen at once by a linearizable read
            // served in region c (a follower: one read-index round trip to the leader).
            let rotated = key_of(
                writer
                    .rotate_key(pb::RotateKeyRequest {
                        key: key.key_id.clone(),
                        idempotency_token: format!("rotate-{i}"),
                    })
                    .await,
            )
            .unwrap();
            let seen = describe(&reader, &key.key_id, None).await.unwrap();
            assert_eq!(seen.primary_version, rotated.primary_version, "a linearizable read missed a write");
        }
        // Bounded staleness: served from node 3's own state while it hears from the leader.
        let stale_ok = describe(&reader, &key.key_id, bounded_staleness(5_000)).await.unwrap();
        assert!(stale_ok.primary_version >= 1);

        // Cut region c off: node 3 stops hearing from the leader, and a pinned client there
        // gets a clear error once the bound has passed, not stale data.
        let relay = cluster.relay().clone();
        relay.isolate(&wan_region(2));
        // Straight to node 3, from region c, with no client library in between (which would
        // follow the error's leader hint).
        let node3 = direct(&cluster, 3, 2);
        let ask = |consistency: Option<pb::consistency::Level>| ask_describe(&node3, &key.key_id, consistency);
        let err = eventually("node 3 refuses a stale read", || async {
            match ask(bounded_staleness(300)).await {
                Ok(_) => Err(tonic::Status::unavailable("still fresh")),
                Err(e) => Ok(e),
            }
        })
        .await;
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("has not heard from a leader within 300 ms"), "{err:?}");
        let hint = err.metadata().get(client::LEADER_HINT).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(hint.as_deref(), Some(cluster.addrs[&1].as_str()), "the error names the leader");
        // A linearizable read cannot be served there at all; nor can a stale one that asked
        // for a read index instead of the error: node 3 tries the leader, and cannot reach it.
        assert!(ask(None).await.is_err());
        let err = ask(bounded_staleness_or(300, pb::OnStale::ReadIndex)).await.unwrap_err();
        // The partition swallows the read index request, so this call's 2 s deadline may pass
        // before node 3's own (request_timeout_ms) does.
        assert!(matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded), "{err:?}");
        assert!(!err.message().contains("has not heard from a leader"), "it tried the read index: {err:?}");

        relay.heal();
        eventually("node 3 serves again after the heal", || async { ask(None).await.map(drop) }).await;
        // With the read index as fallback, a bound of 1 ms is met whether or not a heartbeat
        // arrived within the last millisecond.
        for _ in 0..5 {
            let seen = ask(bounded_staleness_or(1, pb::OnStale::ReadIndex)).await.unwrap();
            assert_eq!(seen.key.unwrap().primary_version, stale_ok.primary_version);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_preferred_region_after_it_heals() {
    bounded(async {
        let cluster = Cluster::start_wan_with(3, 3, LATENCY_MS, "preferred_leader_region = \"region-a\"\n").await;
        cluster.init().await;
        let leader_seen_by = |id: u64| {
            let cluster = &cluster;
            async move { cluster.local_status(id).await.map(|s| s.leader_id) }
        };
        eventually("the leader settles in region a", || async {
            match leader_seen_by(2).await? {
                1 => Ok(()),
                other => Err(tonic::Status::unavailable(format!("leader is {other}"))),
            }
        })
        .await;
        let status = cluster.admin().status(pb::StatusRequest {}).await.unwrap();
        assert!(status.nodes.iter().all(|n| n.preferred_leader_region == "region-a"), "{:?}", status.nodes);
        assert!(status.placement_warnings.is_empty(), "{:?}", status.placement_warnings);
        let key = create_key(&cluster.client(), "preferred", pb::KeySpec::Aes256GcmSiv).await.unwrap();

        // Region a is cut off: regions b and c elect a leader between them.
        let relay = cluster.relay().clone();
        relay.isolate("region-a");
        eventually("b and c elect a leader of their own", || async {
            match leader_seen_by(2).await? {
                2 | 3 => Ok(()),
                other => Err(tonic::Status::unavailable(format!("leader is {other}"))),
            }
        })
        .await;

        // Node 1 still believes it leads (openraft's leader steps down only on hearing a newer
        // term), but its read lease has run out: it must not answer from its stale state while
        // the new leader takes a write.
        let writer = client_in(&cluster, 1, &[2]);
        let rotated = key_of(
            writer
                .rotate_key(pb::RotateKeyRequest {
                    key: key.key_id.clone(),
                    idempotency_token: "while-a-is-cut-off".into(),
                })
                .await,
        )
        .unwrap();
        let node1 = direct(&cluster, 1, 0);
        for consistency in [None, bounded_staleness(500)] {
            match ask_describe(&node1, &key.key_id, consistency).await {
                Err(e) => assert!(matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded), "{e:?}"),
                Ok(seen) => panic!(
                    "the deposed leader answered {consistency:?} with version {} (newest {})",
                    seen.key.unwrap().primary_version,
                    rotated.primary_version
                ),
            }
        }

        // Healed: once node 1 is back and caught up, leadership moves back to it.
        relay.heal();
        let healed = tokio::time::Instant::now();
        eventually("leadership returns to region a", || async {
            match (leader_seen_by(2).await?, cluster.local_status(1).await?.role.as_str()) {
                (1, "leader") => Ok(()),
                other => Err(tonic::Status::unavailable(format!("not yet: {other:?}"))),
            }
        })
        .await;
        eprintln!("leadership returned to region a {:?} after the heal", healed.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_read_gets_past_a_node_that_never_answers() {
    bounded(async {
        // A fourth region with no node in it, for the client: cutting it off from region b
        // leaves the nodes' own links alone.
        let cluster = Cluster::start_wan(3, 4, LATENCY_MS).await;
        cluster.init().await;
        let key = create_key(&cluster.client(), "hedged", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        // Node 3 serves the key before the test starts: a hedge it refuses (still catching up
        // under a loaded CI machine) would leave the call waiting on node 2.
        let node3 = direct(&cluster, 3, 3);
        eventually("node 3 serves the key", || ask_describe(&node3, &key.key_id, None)).await;
        let relay = cluster.relay().clone();
        relay.block(&wan_region(3), &wan_region(1));
        // Every wait but the call's deadline is longer than the deadline, so an attempt at
        // node 2 (blackholed: even its connection attempt hangs) can only end with the call.
        let options = |hedge_after| ClientOptions {
            region: Some(wan_region(3)),
            local_address: Some(wan_client_ip(3)),
            discover: false,
            call_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(60),
            hedge_after,
            ..ClientOptions::default()
        };
        let hedged = cluster.client_with(&[2, 3], options(Some(Duration::from_millis(100))));
        let plain = cluster.client_with(&[2, 3], options(None));
        assert_eq!(hedged.endpoints()[0], cluster.addrs[&2], "node 2 is tried first");

        let seen = describe(&hedged, &key.key_id, None).await.unwrap();
        assert_eq!(seen.key_id, key.key_id, "node 3 answered the hedge");
        let err = describe(&plain, &key.key_id, None).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "without hedging the call waits on node 2: {err:?}");
        // Writes are never hedged, whatever the options say (a fresh client: the first one
        // has since learnt that node 3 answers).
        let fresh = cluster.client_with(&[2, 3], options(Some(Duration::from_millis(100))));
        assert_eq!(fresh.endpoints()[0], cluster.addrs[&2]);
        // CreateAlias is a write without a token: never hedged, never retried once sent.
        let alias = pb::CreateAliasRequest { alias: "never-made".into(), key: key.key_id.clone() };
        let err = fresh.create_alias(alias).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert_eq!(err.kind(), client::ErrorKind::Unknown, "it may have reached node 2: {err:?}");
    })
    .await;
}
