//! NATS in (`kind: nats`, with `async-nats`). Core subjects are subscribed in the queue group
//! `rulehook-<source>`, so several ingest nodes share the messages without duplicates; core
//! NATS is at most once (what is published while no node listens is gone). With `stream:` and
//! `durable:` the source reads a JetStream durable pull consumer instead and acknowledges each
//! message only after its event is stored (at least once); a message delivered again (its ack
//! lost) is recognised by its stream sequence, subject and payload ([`redelivery`]) and not
//! stored twice. Reconnects are async-nats' own.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Handoff;
use crate::connections::{self, State};
use crate::sources::{Listening, NatsSubscription};
use crate::verify::Delivery;

/// Starts the subscription's task.
pub fn start(
    sub: &NatsSubscription,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
) {
    let sub = sub.clone();
    tokio::spawn(async move {
        let stop = shutdown.clone();
        tokio::select! {
            () = run(sub, settings, hand, stop) => {}
            () = shutdown.cancelled() => {}
        }
    });
}

/// This source's line in [`crate::connections`].
#[derive(Clone)]
struct Conn {
    source: String,
    target: String,
    /// Once stopped (the source removed or restarted by a reload), the client's last events
    /// no longer write the state.
    stop: CancellationToken,
}

impl Conn {
    fn set(&self, state: State, error: Option<String>) {
        if !self.stop.is_cancelled() {
            connections::set(&self.source, "nats", &self.target, state, error);
        }
    }
}

async fn run(
    sub: NatsSubscription,
    settings: Arc<Listening>,
    hand: Handoff,
    stop: CancellationToken,
) {
    let conn = Conn {
        source: hand.source().to_string(),
        target: sub.url.clone(),
        stop,
    };
    conn.set(State::Connecting, None);
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = match (&sub.stream, &sub.durable) {
            (Some(stream), Some(durable)) => {
                jetstream(&sub, stream, durable, &settings, &hand, &conn).await
            }
            _ => core(&sub, &settings, &hand, &conn).await,
        };
        let error = result.err();
        if let Some(e) = &error {
            tracing::warn!(source = %hand.source(), "nats: {e}; retrying in {backoff:?}");
        }
        conn.set(State::Reconnecting, error);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn connect(url: &str, conn: &Conn) -> Result<async_nats::Client, String> {
    // async-nats reconnects by itself under a live subscription: its events keep the state.
    let events = conn.clone();
    let connect = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let conn = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => conn.set(State::Connected, None),
                    async_nats::Event::Disconnected => conn.set(State::Reconnecting, None),
                    async_nats::Event::ClientError(e) => {
                        conn.set(State::Reconnecting, Some(e.to_string()))
                    }
                    _ => {}
                }
            }
        })
        .name("rulehook-source")
        .connection_timeout(Duration::from_secs(5))
        .connect(url);
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("no answer from {url}"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

async fn core(
    sub: &NatsSubscription,
    settings: &Listening,
    hand: &Handoff,
    conn: &Conn,
) -> Result<(), String> {
    let client = connect(&sub.url, conn).await?;
    let group = format!("rulehook-{}", hand.source());
    let mut subs = Vec::new();
    for s in &sub.subjects {
        subs.push(
            client
                .queue_subscribe(s.clone(), group.clone())
                .await
                .map_err(|e| format!("subscribe {s}: {e}"))?,
        );
    }
    conn.set(State::Connected, None);
    let mut all = futures_util::stream::select_all(subs);
    while let Some(m) = all.next().await {
        deliver(hand, settings, &m.subject, &m.payload, None).await;
    }
    Err("the subscription ended".into())
}

async fn jetstream(
    sub: &NatsSubscription,
    stream: &str,
    durable: &str,
    settings: &Listening,
    hand: &Handoff,
    conn: &Conn,
) -> Result<(), String> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let client = connect(&sub.url, conn).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream `{stream}`: {e}"))?;
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_string()),
                ack_policy: AckPolicy::Explicit,
                // One filter subject (several need nats-server 2.10; load refuses them).
                filter_subject: sub.subjects.first().cloned().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer `{durable}`: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consumer `{durable}`: {e}"))?;
    conn.set(State::Connected, None);
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| format!("consumer `{durable}`: {e}"))?;
        let once = redelivery(&m);
        if deliver(hand, settings, &m.subject, &m.payload, once).await
            && let Err(e) = m.ack().await
        {
            tracing::debug!(source = %hand.source(), "nats ack: {e}");
        }
    }
    Err("the consumer ended".into())
}

/// How a JetStream message delivered again is recognised: its stream and stream sequence, with
/// a hash of its subject and payload (a stream deleted and made again starts its sequence
/// anew), for a week ([`crate::verify::SENDER_ID_WINDOW`]). `None` when the message carries no
/// JetStream metadata.
fn redelivery(m: &async_nats::jetstream::Message) -> Option<Delivery> {
    let info = m.info().ok()?;
    let mut h = blake3::Hasher::new();
    h.update(&(m.subject.len() as u64).to_be_bytes());
    h.update(m.subject.as_bytes());
    h.update(&m.payload);
    let digest = h.finalize();
    Some(Delivery {
        key: format!(
            "nats/{}/{}/{}",
            info.stream,
            info.stream_sequence,
            hex::encode(&digest.as_bytes()[..12])
        ),
        window: Some(crate::verify::SENDER_ID_WINDOW),
    })
}

/// Decodes and hands on one message: `true` once it is stored or known not to be kept (a
/// payload that does not decode is counted and acknowledged); one delivered again under
/// `once` within its window is taken as a duplicate (acknowledged, not stored again).
async fn deliver(
    hand: &Handoff,
    settings: &Listening,
    subject: &str,
    payload: &[u8],
    once: Option<Delivery>,
) -> bool {
    let body = match settings.format.decode(None, payload) {
        Ok((v, _)) => v,
        Err(e) => {
            hand.undecodable(&format!("subject {subject}"), &e);
            return true;
        }
    };
    let envelope = vec![(
        crate::domain::SUBJECT_HEADER.to_string(),
        subject.to_string(),
    )];
    let delivered = match once {
        Some(once) => hand.deliver_from_once(body, None, envelope, once).await,
        None => hand.deliver_from(body, None, envelope).await,
    };
    match delivered {
        Ok(_) => true,
        Err(e) => {
            hand.store_failed(None, "a nats message", &e);
            false
        }
    }
}
