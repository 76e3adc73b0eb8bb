//! The event exchange: publish (from the daemon's services), forward (already-stamped
//! envelopes from shims and clients) and subscribe with containerd's filters.
//!
//! Subscribers are not namespace-scoped; each gets a bounded queue, and one that falls that
//! far behind is dropped (its stream ends) rather than growing the daemon's memory.

use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::api::types::Envelope;
use crate::api::{Any, Timestamp};
use crate::errdefs::Error;
use crate::filters::Filter;
use crate::identifiers;

pub mod payload;
pub mod plugin;

/// Envelopes a subscriber may have queued before it is dropped.
const QUEUE: usize = 4096;

struct Subscriber {
    filter: Filter,
    tx: Sender<Envelope>,
}

/// The exchange shared by every publisher and subscriber.
#[derive(Default)]
pub struct Exchange {
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A subscriber's queue; the stream ends when the exchange closes.
pub struct Subscription {
    pub events: Receiver<Envelope>,
}

/// Checks a topic: `/` followed by identifiers separated by `/`.
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    if topic.is_empty() {
        return Err(Error::invalid_argument(
            "must not be empty for event: invalid argument",
        ));
    }
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(Error::invalid_argument(
            "must start with '/': invalid argument",
        ));
    };
    if rest.is_empty() {
        return Err(Error::invalid_argument(
            "must have at least one component: invalid argument",
        ));
    }
    for component in rest.split('/') {
        identifiers::validate(component)
            .map_err(|err| err.context(format!("failed validation on component {component:?}")))?;
    }
    Ok(())
}

/// Now as a protobuf timestamp.
pub fn now() -> Timestamp {
    crate::api::timestamp(SystemTime::now())
}

/// Wraps an event message as containerd does: the type URL is the bare proto name.
pub fn any_of<M: protobuf::MessageFull>(event: &M) -> Result<Any, Error> {
    Ok(Any {
        type_url: M::descriptor().full_name().to_string(),
        value: event
            .write_to_bytes()
            .map_err(|err| Error::internal(format!("encode event: {err}")))?,
        ..Default::default()
    })
}

impl Exchange {
    pub fn new() -> Self {
        Exchange::default()
    }

    /// Publishes `event` on `topic` in `namespace`, stamped now.
    pub fn publish(&self, namespace: &str, topic: &str, event: Any) -> Result<(), Error> {
        identifiers::validate(namespace).map_err(|err| err.context("failed publishing event"))?;
        validate_topic(topic).map_err(|err| err.context(format!("envelope topic {topic:?}")))?;
        self.broadcast(Envelope {
            timestamp: Some(now()).into(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(event).into(),
            ..Default::default()
        });
        Ok(())
    }

    /// Publishes `event` as [`Exchange::publish`] does, for the daemon's own events: the
    /// change they report has happened, so a failure to publish is logged, not returned.
    pub fn publish_event<M: protobuf::MessageFull>(&self, namespace: &str, topic: &str, event: &M) {
        let result = any_of(event).and_then(|any| self.publish(namespace, topic, any));
        if let Err(err) = result {
            log::warn!("failed to publish {topic} for namespace {namespace}: {err}");
        }
    }

    /// Passes on an envelope that was stamped elsewhere, after checking it.
    pub fn forward(&self, envelope: Envelope) -> Result<(), Error> {
        identifiers::validate(&envelope.namespace)
            .map_err(|err| err.context("event envelope has invalid namespace"))?;
        validate_topic(&envelope.topic)
            .map_err(|err| err.context(format!("envelope topic {:?}", envelope.topic)))?;
        let stamped = envelope
            .timestamp
            .as_ref()
            .is_some_and(|t| t.seconds != 0 || t.nanos != 0);
        if !stamped {
            return Err(Error::invalid_argument(
                "timestamp must be set on forwarded event: invalid argument",
            ));
        }
        self.broadcast(envelope);
        Ok(())
    }

    /// A new subscription to envelopes matching `filters` (fields `namespace`, `topic` and
    /// `event.<field>` of the payload; see [`payload`]).
    pub fn subscribe(&self, filters: &[String]) -> Result<Subscription, Error> {
        let filter = Filter::parse_all(filters)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        self.subscribers.lock().push(Subscriber { filter, tx });
        Ok(Subscription { events: rx })
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.subscribers.lock().len()
    }

    /// Ends every subscription.
    pub fn close(&self) {
        self.subscribers.lock().clear();
    }

    fn broadcast(&self, envelope: Envelope) {
        log::debug!(
            "event published ns={} topic={}",
            envelope.namespace,
            envelope.topic
        );
        // Decoded at most once, and only if some filter looks into the payload.
        let decoded = std::cell::OnceCell::new();
        let adaptor = |path: &[String]| match path {
            [field] if field == "namespace" => Some(envelope.namespace.clone()),
            [field] if field == "topic" => Some(envelope.topic.clone()),
            [field, rest @ ..] if field == "event" && !rest.is_empty() => decoded
                .get_or_init(|| envelope.event.as_ref().and_then(payload::decode))
                .as_deref()
                .and_then(|msg| payload::field(msg, rest)),
            _ => None,
        };
        self.subscribers.lock().retain(|sub| {
            let wanted = sub.filter.matches(&adaptor);
            if !wanted {
                return true;
            }
            match sub.tx.try_send(envelope.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!("dropping an event subscriber that fell {QUEUE} events behind");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any() -> Any {
        Any {
            type_url: "containerd.events.Test".into(),
            ..Default::default()
        }
    }

    #[test]
    fn publish_reaches_matching_subscribers_only() {
        let exchange = Exchange::new();
        let all = exchange.subscribe(&[]).expect("subscribe");
        let ns = exchange
            .subscribe(&["namespace==other".to_string()])
            .expect("subscribe");
        let topic = exchange
            .subscribe(&["topic~=^/namespaces/".to_string()])
            .expect("subscribe");
        exchange
            .publish("default", "/namespaces/create", any())
            .expect("publish");
        let got = all.events.try_recv().expect("all gets it");
        assert_eq!(got.namespace, "default");
        assert_eq!(got.topic, "/namespaces/create");
        assert!(got.timestamp.seconds > 0);
        assert!(ns.events.try_recv().is_err());
        assert!(topic.events.try_recv().is_ok());
    }

    #[test]
    fn payload_fields_filter_subscriptions() {
        use crate::api::event_types::TaskExit;
        let exchange = Exchange::new();
        let c1 = exchange
            .subscribe(&["topic==\"/tasks/exit\",event.container_id==c1".to_string()])
            .expect("subscribe");
        let labelled = exchange
            .subscribe(&["event.labels.tier==edge".to_string()])
            .expect("subscribe");
        for id in ["c2", "c1"] {
            let exit = TaskExit {
                container_id: id.into(),
                ..Default::default()
            };
            exchange
                .publish("default", "/tasks/exit", any_of(&exit).unwrap())
                .expect("publish");
        }
        let got = c1.events.try_recv().expect("c1's exit");
        let exit: TaskExit = protobuf::Message::parse_from_bytes(&got.event.value).unwrap();
        assert_eq!(exit.container_id, "c1");
        assert!(c1.events.try_recv().is_err(), "c2's exit was filtered out");
        assert!(labelled.events.try_recv().is_err());

        let mut create = crate::api::event_types::NamespaceCreate {
            name: "edge".into(),
            ..Default::default()
        };
        create.labels.insert("tier".into(), "edge".into());
        exchange
            .publish("edge", "/namespaces/create", any_of(&create).unwrap())
            .expect("publish");
        assert_eq!(
            labelled.events.try_recv().expect("labelled").namespace,
            "edge"
        );
        // A payload of an unknown type has no fields.
        exchange.publish("default", "/x", any()).expect("publish");
        assert!(labelled.events.try_recv().is_err());
    }

    #[test]
    fn topics_are_validated() {
        for (topic, message) in [
            ("", "must not be empty"),
            ("foo", "must start with '/'"),
            ("/", "must have at least one component"),
            ("/a//b", "failed validation on component \"\""),
            ("/a/-b-", "failed validation on component \"-b-\""),
        ] {
            let err = validate_topic(topic).expect_err(topic);
            assert!(
                err.message().contains(message),
                "{topic}: {}",
                err.message()
            );
        }
        validate_topic("/tasks/exit").expect("valid");
    }

    #[test]
    fn forward_needs_namespace_topic_and_timestamp() {
        let exchange = Exchange::new();
        let sub = exchange.subscribe(&[]).expect("subscribe");
        let mut envelope = Envelope {
            namespace: "default".into(),
            topic: "/tasks/exit".into(),
            event: Some(any()).into(),
            ..Default::default()
        };
        let err = exchange
            .forward(envelope.clone())
            .expect_err("no timestamp");
        assert_eq!(
            err.message(),
            "timestamp must be set on forwarded event: invalid argument"
        );
        envelope.timestamp = Some(now()).into();
        exchange.forward(envelope.clone()).expect("forward");
        assert_eq!(sub.events.try_recv().expect("got").topic, "/tasks/exit");
        envelope.namespace = "-bad-".into();
        assert!(exchange.forward(envelope).is_err());
    }

    #[test]
    fn bad_filters_and_close() {
        let exchange = Exchange::new();
        assert!(exchange.subscribe(&["topic==".to_string()]).is_err());
        let sub = exchange.subscribe(&[]).expect("subscribe");
        exchange.close();
        assert!(sub.events.recv().is_err(), "closed exchange ends streams");
    }

    #[test]
    fn gone_subscribers_are_forgotten() {
        let exchange = Exchange::new();
        drop(exchange.subscribe(&[]).expect("subscribe"));
        exchange.publish("default", "/x", any()).expect("publish");
        assert_eq!(exchange.subscribers(), 0);
    }
}
