//! MQTT in (`kind: mqtt`, with `rumqttc`): one persistent session per source (`clean_session`
//! off, a stable client id) subscribed at QoS 1 with manual acknowledgements. A message is
//! acknowledged (PUBACK) only after its event is stored, so the broker delivers again what
//! rulehook had not taken — also what was published while it was down. `mqtts://` speaks TLS
//! to the broker (verified against the source's `tls: {ca}` or the system's roots). On a
//! shared store (several ingest nodes) each node's session has its own client id and the
//! topics are subscribed as MQTT 5 / Mosquitto shared subscriptions (`$share/<group>/<topic>`),
//! so the nodes split the messages instead of each storing every one. The connection is retried
//! with backoff; its state is in [`crate::connections`] (`/api/status`,
//! `rulehook_source_connected{source}`).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::Handoff;
use crate::connections::{self, State};
use crate::sources::{Broker, Listening};

/// The topics as subscribed: in `group` as shared subscriptions when there is one (a topic
/// already written as `$share/…` is kept as written).
pub fn subscriptions(topics: &[String], group: Option<&str>) -> Vec<String> {
    topics
        .iter()
        .map(|t| match group {
            Some(g) if !t.starts_with("$share/") => format!("$share/{g}/{t}"),
            _ => t.clone(),
        })
        .collect()
}

/// The broker's address as shown in `/api/status` and the banner.
pub fn target(broker: &Broker) -> String {
    let scheme = if broker.tls.is_some() {
        "mqtts"
    } else {
        "mqtt"
    };
    format!("{scheme}://{}:{}", broker.host, broker.port)
}

/// Starts the session's task. `node` is this node's id on a shared store (several nodes):
/// it makes the client id this node's own and turns on the shared subscription. `before`: the
/// broker settings this source ran with until a reload; topics it had and has no more are
/// unsubscribed (the session is persistent, so the broker would keep sending them).
pub fn start(
    broker: &Broker,
    before: Option<&Broker>,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
    node: Option<&str>,
) -> std::io::Result<()> {
    let client_id = match node {
        Some(n) => format!("{}-{n}", broker.client_id),
        None => broker.client_id.clone(),
    };
    let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let limit = packet_limit(&settings);
    opts.set_max_packet_size(limit, limit);
    if let Some(user) = &broker.username {
        let password = broker.password.as_ref().map(|p| p.expose().to_string());
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if let Some(tls) = &broker.tls {
        let config = crate::tls::client_config(tls.ca.as_deref()).map_err(std::io::Error::other)?;
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ));
    }
    let group = broker
        .share_group
        .clone()
        .or_else(|| node.map(|_| format!("rulehook-{}", hand.source())));
    let topics = subscriptions(&broker.topics, group.as_deref());
    let dropped: Vec<String> = before
        .filter(|b| {
            (&b.host, b.port, &b.client_id) == (&broker.host, broker.port, &broker.client_id)
        })
        .map(|b| {
            let group = b
                .share_group
                .clone()
                .or_else(|| node.map(|_| format!("rulehook-{}", hand.source())));
            subscriptions(&b.topics, group.as_deref())
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !topics.contains(t))
        .collect();
    let target = target(broker);
    connections::set(hand.source(), "mqtt", &target, State::Connecting, None);
    let (client, eventloop) = AsyncClient::new(opts, 64);
    tokio::spawn(async move {
        tokio::select! {
            () = run(client.clone(), eventloop, (topics, dropped), settings, hand.clone(), &target) => {}
            () = shutdown.cancelled() => {
                let _ = client.disconnect().await;
                connections::set(hand.source(), "mqtt", &target, State::Closed, None);
            }
        }
    });
    Ok(())
}

async fn run(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    (topics, dropped): (Vec<String>, Vec<String>),
    settings: Arc<Listening>,
    hand: Handoff,
    target: &str,
) {
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
                // Topics a reload took away: the persistent session still has them.
                for t in &dropped {
                    if let Err(e) = client.unsubscribe(t.clone()).await {
                        tracing::warn!(source = %hand.source(), topic = %t, "mqtt unsubscribe: {e}");
                    }
                }
            }
            // Connected once the subscriptions are in place; a refused one is an error.
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                let error = refused.then(|| "the broker refused a subscription".to_string());
                if let Some(e) = &error {
                    tracing::warn!(source = %hand.source(), "mqtt: {e}");
                }
                connections::set(hand.source(), "mqtt", target, State::Connected, error);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let stored = deliver(&hand, &settings, &p).await;
                if stored && let Err(e) = client.ack(&p).await {
                    tracing::debug!(source = %hand.source(), "mqtt ack: {e}");
                }
                if p.payload.len() > settings.max_message {
                    // Taken once (below); the next connection reads at the usual limit again.
                    let limit = packet_limit(&settings);
                    eventloop.mqtt_options.set_max_packet_size(limit, limit);
                }
            }
            Ok(_) => {}
            Err(e) if oversized(&e).is_some() => {
                // A message longer than the packet limit: the broker sends it again first on
                // every connection, so refusing to read it would stop the session for good
                // (it reconnected every 200 ms, and nothing behind the message came). The
                // next connection reads a packet of its size once, so it is acknowledged and
                // counted as `too_long` (deliver); memory stays within what MQTT can carry.
                let size = oversized(&e)
                    .unwrap_or(MQTT_MAX_PACKET)
                    .min(MQTT_MAX_PACKET);
                tracing::warn!(source = %hand.source(), size, max_message = settings.max_message, "mqtt: a message longer than max_message; it is read once to be acknowledged and dropped (counted as too_long)");
                let limit = packet_limit(&settings);
                eventloop
                    .mqtt_options
                    .set_max_packet_size(size.max(limit), limit);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                connections::set(
                    hand.source(),
                    "mqtt",
                    target,
                    State::Reconnecting,
                    Some(e.to_string()),
                );
                tracing::warn!(source = %hand.source(), "mqtt connection: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The largest packet MQTT 3.1.1 can carry (its remaining length field's limit).
const MQTT_MAX_PACKET: usize = 268_435_455;

/// The packet size read as usual: a message of `max_message` with its topic and header.
fn packet_limit(settings: &Listening) -> usize {
    settings.max_message + 1024
}

/// The size of a packet the client refused to read for being over its limit.
fn oversized(e: &rumqttc::ConnectionError) -> Option<usize> {
    use rumqttc::mqttbytes::Error;
    match e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

/// Decodes and hands on one message: `true` once it is stored or known not to be kept; a
/// payload that does not decode, or is longer than `max_message`, is counted and acknowledged
/// (sending it again would not help).
async fn deliver(hand: &Handoff, settings: &Listening, p: &rumqttc::Publish) -> bool {
    if p.payload.len() > settings.max_message {
        hand.dropped("too_long", None);
        return true;
    }
    let body = match settings.format.decode(None, &p.payload) {
        Ok((v, _)) => v,
        Err(e) => {
            hand.undecodable(&format!("topic {}", p.topic), &e);
            return true;
        }
    };
    let envelope = vec![(crate::domain::TOPIC_HEADER.to_string(), p.topic.clone())];
    match hand.deliver_from(body, None, envelope).await {
        Ok(_) => true,
        Err(e) => {
            hand.store_failed(None, "an mqtt message (the broker will send it again)", &e);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_wrap_topics_once() {
        let topics = vec!["netops/#".to_string(), "$share/g/x".to_string()];
        assert_eq!(subscriptions(&topics, None), topics);
        assert_eq!(
            subscriptions(&topics, Some("rulehook-t")),
            vec![
                "$share/rulehook-t/netops/#".to_string(),
                "$share/g/x".to_string()
            ]
        );
    }
}
