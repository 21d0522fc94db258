//! The relay on real loopback sockets: latency between regions, none inside one, partitions
//! that hold data until they heal, and a dying node's close passed on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};
use wan::{region_ip, region_net, LinkSpec, Relay};

/// An echo server on an ephemeral loopback port; returns its address.
async fn echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Connects to `to` from `from` (an address in a region's /24).
async fn dial(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Regions a and b; a front for an echo "node" in region b.
async fn setup(latency_ms: u64) -> (Relay, wan::Front, tokio::task::JoinHandle<()>) {
    let relay = Relay::new(7);
    relay.add_region("a", region_net(0)).unwrap();
    relay.add_region("b", region_net(1)).unwrap();
    relay.set_default_link(LinkSpec::latency(Duration::from_millis(latency_ms)));
    let (backend, task) = echo().await;
    let ip = region_ip(1, 1);
    let front = relay.listen(SocketAddr::new(IpAddr::V4(ip), free_port(ip)), backend, "b").await.unwrap();
    (relay, front, task)
}

async fn round_trip(s: &mut TcpStream, byte: u8) -> Duration {
    let started = Instant::now();
    s.write_all(&[byte]).await.unwrap();
    let mut b = [0u8; 1];
    timeout(Duration::from_secs(10), s.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(b[0], byte);
    started.elapsed()
}

#[tokio::test]
async fn latency_applies_between_regions_only() {
    let (relay, front, _echo) = setup(40).await;
    // From region a: one way there, one way back.
    let mut s = dial(region_ip(0, 9), front.addr).await;
    for i in 0..3 {
        let rtt = round_trip(&mut s, i).await;
        assert!(rtt >= Duration::from_millis(80), "a→b round trip took {rtt:?}, less than 2 × 40 ms");
    }
    // From inside region b, and from an address in no region, the relay adds nothing (the
    // data must still arrive; nothing is asserted about speed).
    let mut s = dial(region_ip(1, 9), front.addr).await;
    round_trip(&mut s, 1).await;
    let mut s = dial(Ipv4Addr::LOCALHOST, front.addr).await;
    round_trip(&mut s, 2).await;
    assert_eq!(relay.region_of(IpAddr::V4(region_ip(0, 200))).as_deref(), Some("a"));
    assert_eq!(relay.region_of(IpAddr::V4(Ipv4Addr::LOCALHOST)), None);
    assert_eq!(relay.connections(), 3);
}

#[tokio::test]
async fn a_partition_holds_data_until_it_heals() {
    let (relay, front, _echo) = setup(0).await;
    let mut s = dial(region_ip(0, 9), front.addr).await;
    round_trip(&mut s, 1).await;

    relay.isolate("b");
    s.write_all(&[2]).await.unwrap();
    let mut b = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), s.read_exact(&mut b)).await.is_err(),
        "data crossed an isolated region"
    );
    // A new connection across the partition is accepted by the kernel but goes nowhere.
    let mut late = dial(region_ip(0, 10), front.addr).await;
    late.write_all(&[3]).await.unwrap();
    assert!(timeout(Duration::from_millis(300), late.read_exact(&mut b)).await.is_err());
    // Inside region b, nothing changes.
    let mut inside = dial(region_ip(1, 9), front.addr).await;
    round_trip(&mut inside, 4).await;

    relay.heal();
    timeout(Duration::from_secs(10), s.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(b[0], 2, "held data is delivered after the heal, in order");
    timeout(Duration::from_secs(10), late.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(b[0], 3);
}

#[tokio::test]
async fn a_one_way_block_stops_one_direction() {
    let (relay, front, _echo) = setup(0).await;
    let mut s = dial(region_ip(0, 9), front.addr).await;
    round_trip(&mut s, 1).await;
    // b → a blocked: the request arrives, the echo does not come back until unblocked.
    relay.block("b", "a");
    s.write_all(&[5]).await.unwrap();
    let mut b = [0u8; 1];
    assert!(timeout(Duration::from_millis(300), s.read_exact(&mut b)).await.is_err());
    relay.unblock("b", "a");
    timeout(Duration::from_secs(10), s.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(b[0], 5);
}

#[tokio::test]
async fn a_dead_node_closes_its_connections() {
    let relay = Relay::new(1);
    relay.add_region("a", region_net(0)).unwrap();
    relay.add_region("b", region_net(1)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ip = region_ip(1, 2);
    let front = relay
        .listen(SocketAddr::new(IpAddr::V4(ip), free_port(ip)), listener.local_addr().unwrap(), "b")
        .await
        .unwrap();
    let mut s = dial(region_ip(0, 9), front.addr).await;
    let (server_side, _) = timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
    drop(server_side);
    let mut b = [0u8; 1];
    let n = timeout(Duration::from_secs(10), s.read(&mut b)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the client sees the node's close");
}

#[test]
fn regions_must_be_loopback_and_distinct() {
    let relay = Relay::new(1);
    assert!(relay.add_region("a", Ipv4Addr::new(10, 0, 0, 0)).is_err());
    relay.add_region("a", region_net(0)).unwrap();
    relay.add_region("a", region_ip(0, 5)).unwrap();
    let err = relay.add_region("b", region_ip(0, 7)).unwrap_err();
    assert!(err.to_string().contains("already belongs to region a"), "{err}");
}
