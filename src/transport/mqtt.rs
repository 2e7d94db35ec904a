//! MQTT in (`kind: mqtt`, with `rumqttc`): one persistent session per source (`clean_session`
//! off, a stable client id) subscribed at QoS 1 with manual acknowledgements. A message is
//! acknowledged (PUBACK) only after its event is stored, so the broker delivers again what
//! rulehook had not taken — also what was published while it was down. The connection is
//! retried with backoff; its state is the `rulehook_source_connected{source}` gauge.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::{Delivered, Handoff};
use crate::sources::{Broker, Listening};

/// Gauge: 1 while a broker source is connected, else 0.
pub const CONNECTED: &str = "rulehook_source_connected";

/// Starts the session's task.
pub fn start(
    broker: &Broker,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
) {
    let mut opts = MqttOptions::new(broker.client_id.clone(), broker.host.clone(), broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_max_packet_size(settings.max_message + 1024, settings.max_message + 1024);
    if let Some(user) = &broker.username {
        let password = broker.password.as_ref().map(|p| p.expose().to_string());
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let topics = broker.topics.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = run(client.clone(), eventloop, topics, settings, hand) => {}
            () = shutdown.cancelled() => {
                let _ = client.disconnect().await;
            }
        }
    });
}

async fn run(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    topics: Vec<String>,
    settings: Arc<Listening>,
    hand: Handoff,
) {
    let connected = metrics::gauge!(CONNECTED, "source" => hand.source().to_string());
    connected.set(0.0);
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(source = %hand.source(), session_present = ack.session_present, "mqtt connected");
                // Subscribed again on every connection: cheap, and right when the broker lost
                // the session.
                for t in &topics {
                    if let Err(e) = client.subscribe(t.clone(), QoS::AtLeastOnce).await {
                        tracing::warn!(source = %hand.source(), topic = %t, "mqtt subscribe: {e}");
                    }
                }
            }
            // Connected for this gauge once the subscriptions are in place.
            Ok(Event::Incoming(Packet::SubAck(_))) => connected.set(1.0),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let stored = deliver(&hand, &settings, &p).await;
                if stored && let Err(e) = client.ack(&p).await {
                    tracing::debug!(source = %hand.source(), "mqtt ack: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected.set(0.0);
                tracing::warn!(source = %hand.source(), "mqtt connection: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Decodes and hands on one message: `true` once it is stored or known not to be kept; a
/// payload that does not decode is counted and acknowledged (sending it again would not help).
async fn deliver(hand: &Handoff, settings: &Listening, p: &rumqttc::Publish) -> bool {
    let peer = std::net::IpAddr::from([0, 0, 0, 0]);
    let body = match settings.format.decode(None, &p.payload) {
        Ok((v, _)) => v,
        Err(e) => {
            hand.malformed("undecodable", peer);
            tracing::debug!(source = %hand.source(), topic = %p.topic, "mqtt payload: {e}");
            return true;
        }
    };
    let envelope = vec![(crate::domain::TOPIC_HEADER.to_string(), p.topic.clone())];
    match hand.deliver_from(body, None, envelope).await {
        Ok(Delivered::Stored | Delivered::Unmatched | Delivered::Dropped(_)) => true,
        Err(e) => {
            hand.dropped("store_failed", None);
            tracing::warn!(source = %hand.source(), "an mqtt message could not be stored (the broker will send it again): {e}");
            false
        }
    }
}
