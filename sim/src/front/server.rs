//! The TCP server: accepts connections (over TLS with `--tls-cert`), runs one task per
//! connection that reads frames, executes commands in order and writes replies, and shuts
//! everything down on request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::front::commands::{add_auth_fields, execute, hello_reply, Conn, Outcome};
use crate::front::wire::{self, Request, WireError};
use crate::node::state::Shared;

/// How the simulator is started.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on, e.g. "127.0.0.1".
    pub bind: String,
    /// Port to listen on; 0 picks any free port.
    pub port: u16,
    /// Oplog capacity in entries; older entries are truncated (capped).
    pub oplog_max_entries: usize,
    /// Orders to generate in the `shop` demo database (0 = no demo data).
    pub seed_demo: usize,
    /// Serve TLS only, with this certificate chain and key (`--tls-cert`/`--tls-key`).
    pub tls: Option<TlsFiles>,
    /// Access control: `USER:PASSWORD[:ROLE[+ROLE...]],...` (`--auth`, see `auth`).
    pub auth: Option<String>,
    /// Ask clients for a certificate and verify it against this CA (`--tls-ca-file`, mongod's
    /// `net.tls.CAFile`); needs `tls`. A client without one is refused unless
    /// `tls_allow_connections_without_certificates`.
    pub tls_ca_file: Option<PathBuf>,
    /// Let clients without a certificate connect when `tls_ca_file` is set
    /// (`--tls-allow-connections-without-certificates`).
    pub tls_allow_connections_without_certificates: bool,
    /// MONGODB-X509 users in `$external`, each `SUBJECT[:ROLE[+ROLE...]]` (`--x509-user`, see
    /// `auth`); needs `tls_ca_file`, and turns access control on as `auth` does.
    pub x509_users: Vec<String>,
    /// The `maxWireVersion` `hello` reports: 21 is MongoDB 7.0. Below 21 the server refuses
    /// what 7.0 added and clients decide by it (`$changeStreamSplitLargeEvent` is then an
    /// unknown stage, as on 6.0 before 6.0.9), so tests can see a client's older-server path.
    pub max_wire_version: i32,
    /// `--shards N`: with N >= 1, the port is a `mongos` in front of N in-process shards (each
    /// a replica set `shardK` on a port of its own); 0 is a lone replica set `rs0`.
    pub shards: usize,
    /// `--balancer-interval-ms`: with `shards`, a balancer round (one chunk moved from the
    /// shard with the most documents to the one with the fewest) at this interval.
    pub balancer_interval_ms: Option<u64>,
}

/// What a listener serves: a node's commands, or the router's.
#[derive(Clone)]
enum Front {
    Node(Arc<Shared>),
    Router(Arc<crate::router::Router>),
}

/// PEM files for `SimOptions::tls`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 0,
            oplog_max_entries: 1_000_000,
            seed_demo: 0,
            tls: None,
            auth: None,
            tls_ca_file: None,
            tls_allow_connections_without_certificates: false,
            x509_users: Vec::new(),
            max_wire_version: crate::node::state::MAX_WIRE_VERSION,
            shards: 0,
            balancer_interval_ms: None,
        }
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    /// With `SimOptions::shards`, each shard's own address (`shardK` at index K).
    shard_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Every connection task holds a sender; all dropped = all closed.
    connections_done: mpsc::Receiver<()>,
    /// The replica set's one node, or every shard's.
    nodes: Vec<Arc<Shared>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shards' own addresses (empty for a lone replica set).
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// A connection string for the replica set `rs0`, or the mongos of a sharded simulator
    /// (add credentials and TLS options to it for a secured simulator).
    pub fn uri(&self) -> String {
        if self.shard_addrs.is_empty() {
            format!("mongodb://{}/?replicaSet=rs0", self.addr)
        } else {
            format!("mongodb://{}/", self.addr)
        }
    }

    /// How many documents of `ns` (`db.coll`) change streams looked up for
    /// `fullDocument: updateLookup` so far, over every node (a mongos's own lookups of
    /// documents that moved are not counted).
    pub fn update_lookups(&self, ns: &str) -> u64 {
        self.nodes.iter().map(|n| n.update_lookups.count(ns)).sum()
    }

    /// Closes the listener and every connection, and waits until they are gone.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in &mut self.accept_tasks {
            let _ = t.await;
        }
        while self.connections_done.recv().await.is_some() {}
    }
}

/// Starts the simulator and returns once it is listening.
pub async fn start(opts: SimOptions) -> std::io::Result<SimHandle> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if opts.tls_ca_file.is_some() && opts.tls.is_none() {
        return Err(invalid(
            "--tls-ca-file needs --tls-cert and --tls-key".into(),
        ));
    }
    if !opts.x509_users.is_empty() && opts.tls_ca_file.is_none() {
        // Without a CA the server never learns a verified subject, so nobody could log in.
        return Err(invalid(
            "--x509-user needs --tls-ca-file (client certificates are verified against it)".into(),
        ));
    }
    let users = if opts.auth.is_some() || !opts.x509_users.is_empty() {
        let mut users = crate::front::auth::Users::parse(opts.auth.as_deref().unwrap_or(""))
            .map_err(|e| invalid(e.to_string()))?;
        for spec in &opts.x509_users {
            users.add_x509(spec).map_err(|e| invalid(e.to_string()))?;
        }
        Some(users)
    } else {
        None
    };
    let clients = opts
        .tls_ca_file
        .as_deref()
        .map(|ca| crate::front::tls::ClientCertificates {
            ca,
            optional: opts.tls_allow_connections_without_certificates,
        });
    let tls = opts
        .tls
        .as_ref()
        .map(|t| crate::front::tls::acceptor(&t.cert, &t.key, clients))
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    let mut shard_addrs = Vec::new();
    let mut nodes = Vec::new();
    let front = if opts.shards == 0 {
        let mut shared = Shared::new(opts.oplog_max_entries, users);
        shared.max_wire_version = opts.max_wire_version;
        let shared = Arc::new(shared);
        if opts.seed_demo > 0 {
            crate::front::demo::load(&shared, opts.seed_demo);
        }
        nodes.push(shared.clone());
        Front::Node(shared)
    } else {
        let clock = Arc::new(crate::node::clock::ClusterClock::default());
        let mut shards = Vec::new();
        for k in 0..opts.shards {
            // Every shard takes the cluster's users, so its own port asks for the same logins
            // (a real shard has users of its own; nothing here tells them apart).
            let mut shared =
                Shared::with_clock(opts.oplog_max_entries, users.clone(), clock.clone());
            shared.max_wire_version = opts.max_wire_version;
            shared.set_name = format!("shard{k}");
            let shared = Arc::new(shared);
            let listener = TcpListener::bind((opts.bind.as_str(), 0)).await?;
            shard_addrs.push(listener.local_addr()?);
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                Front::Node(shared.clone()),
                tls.clone(),
                shutdown_rx.clone(),
                done_tx.clone(),
            )));
            shards.push(shared);
        }
        if opts.seed_demo > 0 {
            crate::front::demo::load(&shards[0], opts.seed_demo);
        }
        nodes.extend(shards.iter().cloned());
        let hosts = shard_addrs.iter().map(|a| a.to_string()).collect();
        let router = Arc::new(crate::router::Router::new(shards, clock, hosts));
        if let Some(ms) = opts.balancer_interval_ms.filter(|ms| *ms > 0) {
            crate::router::spawn_balancer(&router, std::time::Duration::from_millis(ms));
        }
        Front::Router(router)
    };
    let listener = TcpListener::bind((opts.bind.as_str(), opts.port)).await?;
    let addr = listener.local_addr()?;
    accept_tasks.push(tokio::spawn(accept_loop(
        listener,
        front,
        tls,
        shutdown_rx,
        done_tx,
    )));
    tracing::info!(%addr, "mongo-sim listening");
    Ok(SimHandle {
        addr,
        shard_addrs,
        shutdown: shutdown_tx,
        accept_tasks,
        connections_done: done_rx,
        nodes,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Front,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let tls = tls.clone();
                    let mut shutdown = shutdown.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = shutdown.changed() => {}
                            r = serve(stream, shared, tls) => {
                                if let Err(e) = r {
                                    tracing::debug!(%peer, error = %e, "connection closed");
                                }
                            }
                        }
                        drop(done);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    shared: Front,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(), WireError> {
    stream.set_nodelay(true)?;
    let me = stream.local_addr()?.to_string();
    let Some(tls) = tls else {
        let (read_half, write_half) = stream.into_split();
        return serve_frames(read_half, write_half, me, None, shared).await;
    };
    // requireTLS: a connection whose first byte does not start a TLS handshake is closed
    // without a reply, as mongod closes it.
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    if n == 0 || first[0] != crate::front::tls::HANDSHAKE_RECORD {
        tracing::info!(
            "closing a connection that did not start with TLS: the server is configured to only allow SSL connections"
        );
        // Read what the client sent (its hello) before closing, so it sees the connection
        // closed (EOF) rather than reset by unread data.
        let mut sink = vec![0u8; 16 * 1024];
        let mut stream = stream;
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
        return Ok(());
    }
    let stream = tls.accept(stream).await?;
    // With --tls-ca-file the handshake has verified the client's certificate (if it sent
    // one): its subject is who MONGODB-X509 logs this connection in as.
    let subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| match crate::front::tls::subject(leaf) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "client certificate without a usable subject");
                None
            }
        });
    let (read_half, write_half) = tokio::io::split(stream);
    serve_frames(read_half, write_half, me, subject, shared).await
}

async fn serve_frames<R, W>(
    read_half: R,
    mut write_half: W,
    me: String,
    x509_subject: Option<String>,
    front: Front,
) -> Result<(), WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut conn = Conn {
        id: match &front {
            Front::Node(s) => s.next_connection_id(),
            Front::Router(r) => r.next_connection_id(),
        },
        app_name: None,
        me,
        session: crate::front::auth::Session::with_certificate(x509_subject),
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let mut body = Vec::with_capacity(64 * 1024);
    let mut next_request_id: i32 = 1;
    while let Some(frame) = wire::read_frame(&mut reader, &mut body).await? {
        out.clear();
        match frame.op_code {
            wire::OP_MSG => {
                let Request::Msg {
                    command,
                    documents,
                    more_to_come,
                } = wire::decode_op_msg(&body)?
                else {
                    return Err(WireError::Malformed("not an OP_MSG".into()));
                };
                let outcome = match &front {
                    Front::Node(shared) => execute(shared, &mut conn, command, documents).await,
                    Front::Router(router) => router.execute(&mut conn, command, documents).await,
                };
                let (reply, batch) = match outcome {
                    Outcome::Reply(r, batch) => (r, batch),
                    Outcome::CloseConnection => return Ok(()),
                };
                if more_to_come {
                    continue; // the client expects no reply
                }
                let batch = batch.as_deref();
                wire::write_op_msg(&mut out, next_request_id, frame.request_id, &reply, batch)
                    .map_err(|e| WireError::Malformed(format!("cannot encode reply: {e}")))?;
            }
            wire::OP_QUERY => {
                let Request::Query { collection, query } = wire::decode_op_query(&body)? else {
                    return Err(WireError::Malformed("not an OP_QUERY".into()));
                };
                let name = query.keys().next().cloned().unwrap_or_default();
                let (reply, failure) = if collection.ends_with(".$cmd")
                    && matches!(name.as_str(), "hello" | "isMaster" | "ismaster")
                {
                    let mut r = match &front {
                        Front::Node(shared) => {
                            let mut r =
                                hello_reply(shared, conn.id, &conn.me, name != "hello", true);
                            add_auth_fields(shared, &mut conn.session, &query, &mut r);
                            r
                        }
                        Front::Router(router) => {
                            let mut r = router.hello(&conn, name != "hello");
                            router.add_auth_fields(&mut conn, &query, &mut r);
                            r
                        }
                    };
                    r.insert("ok", 1.0);
                    (r, false)
                } else {
                    tracing::warn!(collection, command = %name, "refusing legacy OP_QUERY command");
                    (
                        bson::doc! {
                            "$err": format!("Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"),
                            "code": 352,
                            "ok": 0.0,
                            "errmsg": format!("Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"),
                            "codeName": "UnsupportedOpQueryCommand",
                        },
                        true,
                    )
                };
                wire::write_op_reply(&mut out, next_request_id, frame.request_id, &reply, failure)
                    .map_err(|e| WireError::Malformed(format!("cannot encode reply: {e}")))?;
            }
            wire::OP_GET_MORE => {
                tracing::warn!(
                    op_code = frame.op_code,
                    "refusing removed legacy opcode OP_GET_MORE"
                );
                let reply = bson::doc! {
                    "$err": "OP_GET_MORE is no longer supported. The client driver may require an upgrade.",
                    "code": 5739101, "ok": 0.0,
                };
                wire::write_op_reply(&mut out, next_request_id, frame.request_id, &reply, true)
                    .map_err(|e| WireError::Malformed(format!("cannot encode reply: {e}")))?;
            }
            op @ (wire::OP_INSERT | wire::OP_UPDATE | wire::OP_DELETE | wire::OP_KILL_CURSORS) => {
                // Fire-and-forget legacy writes have no reply; MongoDB 6+ logs and drops them.
                tracing::warn!(op_code = op, "ignoring removed legacy opcode");
                continue;
            }
            wire::OP_COMPRESSED => {
                return Err(WireError::Malformed(
                    "OP_COMPRESSED received but no compressor was advertised".into(),
                ));
            }
            other => {
                return Err(WireError::Malformed(format!("unsupported opcode {other}")));
            }
        }
        next_request_id = next_request_id.wrapping_add(1);
        write_half.write_all(&out).await?;
        // Buffers are reused (reallocating 16 MiB per batch costs page
        // faults), but one oversized message must not pin memory forever.
        if out.capacity() > 32 * 1024 * 1024 {
            out = Vec::with_capacity(64 * 1024);
        }
        if body.capacity() > 32 * 1024 * 1024 {
            body = Vec::with_capacity(64 * 1024);
        }
    }
    Ok(())
}
