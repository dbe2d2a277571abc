//! The unchanged engine, client library and load generator over the
//! smoltcp stack on a simulated link, in real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use warpwire_client::{Client, ClientConfig, LoadConfig};
use warpwire_engine::{HandlerError, Server, ServerConfig, ServerHandle, SessionInfo};
use warpwire_stack::sim::{self, SimConfig, SimDevice};
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_transport::TransportError;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 8, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 8, 2);

fn stack(
    dev: &Mutex<Option<SimDevice>>,
    ip: Ipv4Addr,
) -> Result<StackTransport<SimDevice>, TransportError> {
    let d = dev
        .lock()
        .unwrap()
        .take()
        .ok_or(TransportError::Unsupported {
            backend: "sim",
            what: "one device per end",
        })?;
    let mut cfg = StackConfig::new(ip, 24);
    cfg.name = "sim";
    Ok(StackTransport::new(d, cfg, Instant::now())?)
}

struct Hasher(Arc<Mutex<(Sha256, u64)>>);
impl warpwire_engine::DataHandler for Hasher {
    fn on_data(&self, _: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        let mut g = self.0.lock().unwrap();
        g.0.update(body);
        g.1 += body.len() as u64;
        Ok(body.len() as u64)
    }
}

/// One end's device, handed to the transport factory exactly once.
type DeviceSlot = Arc<Mutex<Option<SimDevice>>>;
/// SHA-256 and length of what the DATA handler saw.
type Hashed = Arc<Mutex<(Sha256, u64)>>;

fn setup(link: SimConfig) -> (ServerHandle, DeviceSlot, Hashed) {
    let (a, b) = sim::pair(link);
    let a = Arc::new(Mutex::new(Some(a)));
    let hashed = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let mut srv = Server::new(ServerConfig {
        listen: SocketAddr::from((SERVER, 7077)),
        workers: 1,
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    srv.data_handler(Hasher(hashed.clone()));
    let h = srv.start(move |_| stack(&a, SERVER)).unwrap();
    (h, Arc::new(Mutex::new(Some(b))), hashed)
}

fn client(dev: Arc<Mutex<Option<SimDevice>>>) -> Client {
    Client::connect(
        move || stack(&dev, CLIENT),
        SocketAddr::from((SERVER, 7077)),
        ClientConfig {
            reconnect: None,
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn protocol_over_the_stack() {
    let (h, dev, _) = setup(SimConfig::default());
    let c = client(dev);
    assert!(c.ping().unwrap() < Duration::from_secs(1));
    assert_eq!(
        &c.echo(Bytes::from_static(b"over smoltcp")).unwrap()[..],
        b"over smoltcp"
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(c.echo(Bytes::from(big.clone())).unwrap(), Bytes::from(big));
    assert_eq!(
        &c.app(0x80, Bytes::from_static(b"abc")).unwrap()[..],
        b"cba"
    );
    let s = c.stats().unwrap();
    assert_eq!(s.transport, "sim");
    assert_eq!(c.broadcast(Bytes::from_static(b"x")).unwrap(), 0);
    c.close();
    h.stop().unwrap();
}

#[test]
fn data_survives_a_faulty_link() {
    const TOTAL: usize = 5 << 20;
    let link = SimConfig {
        loss: 0.01,
        reorder: 0.01,
        duplicate: 0.01,
        corrupt: 0.001,
        seed: 7,
        ..SimConfig::default()
    };
    let (h, dev, hashed) = setup(link);
    let c = client(dev);
    let mut sent = Sha256::new();
    let mut x = 0x1234_5678_9abc_def1u64;
    let chunks = TOTAL / (64 * 1024);
    let mut written = Vec::new();
    let mut last = None;
    for i in 0..chunks {
        let body: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sent.update(&body);
        let req = warpwire_client::Request::new(warpwire_frame::MessageType::DATA, body);
        if i + 1 == chunks {
            // One acked frame at the end confirms everything before it.
            last = Some(c.request(req.with_flags(warpwire_frame::Flags::ACK_REQUESTED)));
        } else {
            // Unacked DATA gets no reply; keep the handle (dropping it cancels).
            written.push(c.send(req));
        }
    }
    for w in written {
        w.wait().unwrap();
    }
    let reply = last.unwrap().wait().unwrap();
    assert_eq!(reply.msg_type, warpwire_frame::MessageType::DATA_ACK);
    let g = hashed.lock().unwrap();
    assert_eq!(g.1, TOTAL as u64);
    assert_eq!(
        g.0.clone().finalize(),
        sent.finalize(),
        "bytes lost, reordered or corrupted"
    );
    drop(g);
    c.close();
    h.stop().unwrap();
}

#[test]
fn load_generator_over_the_stack() {
    let (h, dev, _) = setup(SimConfig::default());
    let mut cfg = LoadConfig::new(SocketAddr::from((SERVER, 7077)));
    cfg.connections = 4;
    cfg.pipeline_depth = 8;
    cfg.count = Some(5_000);
    cfg.duration = Some(Duration::from_secs(30));
    let r = warpwire_client::loadgen::run(move || stack(&dev, CLIENT), &cfg, |_| {}).unwrap();
    assert!(r.messages >= 5_000, "{r}");
    assert_eq!((r.errors, r.lost), (0, 0), "{r}");
    h.stop().unwrap();
}
