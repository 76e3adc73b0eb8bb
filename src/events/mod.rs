//! The event exchange: publish (from the daemon's services), forward (already-stamped
//! envelopes from shims and clients) and subscribe with containerd's filters.
//!
//! Subscribers are not namespace-scoped. Each has a queue bounded in bytes
//! ([`SUBSCRIBER_BUDGET`]): one that falls that far behind is dropped, its queue freed at
//! once and its stream ended, as containerd drops slow subscribers, rather than growing
//! the daemon's memory. A queue is freed as soon as its subscription ends, and an event
//! larger than [`MAX_EVENT_SIZE`] is refused when published or forwarded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::api::types::Envelope;
use crate::api::{Any, Timestamp};
use crate::errdefs::Error;
use crate::filters::Filter;
use crate::identifiers::{self, go_quote};

pub mod payload;
pub mod plugin;

/// Bytes of events a subscriber may have waiting before it is dropped.
pub const SUBSCRIBER_BUDGET: usize = 8 << 20;

/// The largest event payload accepted from a publisher or a forwarder.
pub const MAX_EVENT_SIZE: usize = 1 << 20;

struct Subscriber {
    filter: Filter,
    queue: Arc<Queue>,
}

/// The envelopes waiting for one subscriber, and a bell rung when one arrives or the
/// subscription ends.
struct Queue {
    state: Mutex<QueueState>,
    bell: Sender<()>,
}

#[derive(Default)]
struct QueueState {
    envelopes: VecDeque<Envelope>,
    bytes: usize,
    /// Dropped for falling behind, or ended by the exchange or the subscriber.
    ended: bool,
    /// The task waiting for news ([`Subscription::poll_news`]).
    waker: Option<std::task::Waker>,
}

impl Queue {
    /// Queues `envelope` of `size` bytes; false when the subscriber is to be forgotten.
    fn push(&self, envelope: &Envelope, size: usize) -> bool {
        let mut state = self.state.lock();
        if state.ended {
            return false;
        }
        if state.bytes + size > SUBSCRIBER_BUDGET {
            log::warn!(
                "dropping an event subscriber {} bytes and {} events behind (budget {SUBSCRIBER_BUDGET} bytes)",
                state.bytes,
                state.envelopes.len()
            );
            state.end();
            let waker = state.waker.take();
            drop(state);
            self.ring(waker);
            return false;
        }
        state.bytes += size;
        state.envelopes.push_back(envelope.clone());
        let waker = state.waker.take();
        drop(state);
        self.ring(waker);
        true
    }

    fn end(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.end();
            state.waker.take()
        };
        self.ring(waker);
    }

    fn ring(&self, waker: Option<std::task::Waker>) {
        let _ = self.bell.try_send(());
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl QueueState {
    /// Ends the queue and frees what it held.
    fn end(&mut self) {
        self.ended = true;
        self.envelopes = VecDeque::new();
        self.bytes = 0;
    }
}

/// The exchange shared by every publisher and subscriber.
#[derive(Default)]
pub struct Exchange {
    subscribers: Mutex<Vec<Subscriber>>,
}

/// One subscriber's end of its queue. Dropping it ends the subscription and frees the queue.
pub struct Subscription {
    queue: Arc<Queue>,
    bell: Receiver<()>,
}

/// What a subscription has next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Event(Box<Envelope>),
    /// Nothing yet: wait on [`Subscription::bell`].
    Empty,
    /// The subscription is over (dropped for falling behind, or the exchange closed).
    Ended,
}

impl Subscription {
    /// The next envelope, without waiting.
    pub fn try_next(&self) -> Next {
        let mut state = self.queue.state.lock();
        if state.ended {
            return Next::Ended;
        }
        match state.envelopes.pop_front() {
            Some(envelope) => {
                state.bytes -= envelope_size(&envelope);
                if state.envelopes.is_empty() {
                    // Give back a queue that once grew.
                    state.envelopes = VecDeque::new();
                }
                Next::Event(Box::new(envelope))
            }
            None => Next::Empty,
        }
    }

    /// Receives `()` after an envelope arrives or the subscription ends; then call
    /// [`try_next`](Subscription::try_next) until it is [`Next::Empty`].
    pub fn bell(&self) -> &Receiver<()> {
        &self.bell
    }

    /// The next envelope, waiting up to `timeout`; `None` when none came or it ended.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Envelope> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.try_next() {
                Next::Event(envelope) => return Some(*envelope),
                Next::Ended => return None,
                Next::Empty => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if self.bell.recv_timeout(left).is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Ready once an envelope is queued or the subscription ended; otherwise `cx` is
    /// woken when that happens.
    pub fn poll_news(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut state = self.queue.state.lock();
        if state.ended || !state.envelopes.is_empty() {
            return std::task::Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        std::task::Poll::Pending
    }

    /// Whether the subscription is over.
    pub fn ended(&self) -> bool {
        self.queue.state.lock().ended
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.queue.end();
    }
}

/// What an envelope costs a queue: its payload and names.
fn envelope_size(envelope: &Envelope) -> usize {
    let payload = envelope
        .event
        .as_ref()
        .map_or(0, |any| any.value.len() + any.type_url.len());
    payload + envelope.topic.len() + envelope.namespace.len() + 64
}

/// Refuses an event larger than [`MAX_EVENT_SIZE`].
fn check_size(event: Option<&Any>) -> Result<(), Error> {
    let size = event.map_or(0, |any| any.value.len() + any.type_url.len());
    if size > MAX_EVENT_SIZE {
        return Err(Error::invalid_argument(format!(
            "event of {size} bytes exceeds the maximum of {MAX_EVENT_SIZE} bytes: invalid argument"
        )));
    }
    Ok(())
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
        identifiers::validate(component).map_err(|err| {
            err.context(format!(
                "failed validation on component {}",
                go_quote(component)
            ))
        })?;
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
        validate_topic(topic)
            .map_err(|err| err.context(format!("envelope topic {}", go_quote(topic))))?;
        check_size(Some(&event))?;
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
            .map_err(|err| err.context(format!("envelope topic {}", go_quote(&envelope.topic))))?;
        check_size(envelope.event.as_ref())?;
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
        let (bell_tx, bell) = crossbeam_channel::bounded(1);
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            bell: bell_tx,
        });
        self.subscribers.lock().push(Subscriber {
            filter,
            queue: queue.clone(),
        });
        Ok(Subscription { queue, bell })
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.subscribers.lock().len()
    }

    /// Ends every subscription.
    pub fn close(&self) {
        for sub in self.subscribers.lock().drain(..) {
            sub.queue.end();
        }
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
        let size = envelope_size(&envelope);
        self.subscribers.lock().retain(|sub| {
            if sub.queue.state.lock().ended {
                return false;
            }
            if !sub.filter.matches(&adaptor) {
                return true;
            }
            sub.queue.push(&envelope, size)
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
        let got = all.next_timeout(Duration::ZERO).expect("all gets it");
        assert_eq!(got.namespace, "default");
        assert_eq!(got.topic, "/namespaces/create");
        assert!(got.timestamp.seconds > 0);
        assert!(ns.next_timeout(Duration::ZERO).is_none());
        assert!(topic.next_timeout(Duration::ZERO).is_some());
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
        let got = c1.next_timeout(Duration::ZERO).expect("c1's exit");
        let exit: TaskExit = protobuf::Message::parse_from_bytes(&got.event.value).unwrap();
        assert_eq!(exit.container_id, "c1");
        assert!(
            c1.next_timeout(Duration::ZERO).is_none(),
            "c2's exit was filtered out"
        );
        assert!(labelled.next_timeout(Duration::ZERO).is_none());

        let mut create = crate::api::event_types::NamespaceCreate {
            name: "edge".into(),
            ..Default::default()
        };
        create.labels.insert("tier".into(), "edge".into());
        exchange
            .publish("edge", "/namespaces/create", any_of(&create).unwrap())
            .expect("publish");
        assert_eq!(
            labelled
                .next_timeout(Duration::ZERO)
                .expect("labelled")
                .namespace,
            "edge"
        );
        // A payload of an unknown type has no fields.
        exchange.publish("default", "/x", any()).expect("publish");
        assert!(labelled.next_timeout(Duration::ZERO).is_none());
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
        assert_eq!(
            sub.next_timeout(Duration::ZERO).expect("got").topic,
            "/tasks/exit"
        );
        envelope.namespace = "-bad-".into();
        assert!(exchange.forward(envelope).is_err());
    }

    #[test]
    fn bad_filters_and_close() {
        let exchange = Exchange::new();
        assert!(exchange.subscribe(&["topic==".to_string()]).is_err());
        let sub = exchange.subscribe(&[]).expect("subscribe");
        exchange.close();
        assert_eq!(sub.try_next(), Next::Ended, "closed exchange ends streams");
    }

    #[test]
    fn gone_subscribers_are_forgotten() {
        let exchange = Exchange::new();
        drop(exchange.subscribe(&[]).expect("subscribe"));
        exchange.publish("default", "/x", any()).expect("publish");
        assert_eq!(exchange.subscribers(), 0);
    }

    fn sized(bytes: usize) -> Any {
        Any {
            type_url: "containerd.events.Test".into(),
            value: vec![7; bytes],
            ..Default::default()
        }
    }

    #[test]
    fn a_subscriber_past_its_byte_budget_is_dropped_and_its_queue_freed() {
        let exchange = Exchange::new();
        let stalled = exchange.subscribe(&[]).expect("subscribe");
        let reader = exchange.subscribe(&[]).expect("subscribe");
        let events = SUBSCRIBER_BUDGET / MAX_EVENT_SIZE + 2;
        for _ in 0..events {
            exchange
                .publish("default", "/big", sized(MAX_EVENT_SIZE - 64))
                .expect("publish");
            assert!(
                reader.next_timeout(Duration::ZERO).is_some(),
                "reader keeps up"
            );
        }
        assert!(stalled.ended(), "the stalled subscriber was kept");
        assert_eq!(stalled.queue.state.lock().bytes, 0);
        assert_eq!(stalled.queue.state.lock().envelopes.capacity(), 0);
        assert_eq!(stalled.try_next(), Next::Ended);
        assert!(!reader.ended());
        assert_eq!(exchange.subscribers(), 1, "the dropped one is forgotten");
    }

    #[test]
    fn a_closed_subscription_frees_its_queue_at_once() {
        let exchange = Exchange::new();
        let sub = exchange.subscribe(&[]).expect("subscribe");
        let queue = sub.queue.clone();
        exchange
            .publish("default", "/x", sized(1000))
            .expect("publish");
        assert!(queue.state.lock().bytes > 1000);
        drop(sub);
        assert_eq!(queue.state.lock().bytes, 0);
        assert!(queue.state.lock().envelopes.is_empty());
    }

    #[test]
    fn events_larger_than_the_cap_are_refused() {
        let exchange = Exchange::new();
        let err = exchange
            .publish("default", "/x", sized(MAX_EVENT_SIZE + 1))
            .expect_err("too big");
        assert_eq!(err.class(), crate::errdefs::Class::InvalidArgument);
        assert!(
            err.message().contains("exceeds the maximum"),
            "{}",
            err.message()
        );
        let envelope = Envelope {
            namespace: "default".into(),
            topic: "/x".into(),
            timestamp: Some(now()).into(),
            event: Some(sized(MAX_EVENT_SIZE + 1)).into(),
            ..Default::default()
        };
        assert!(exchange.forward(envelope).is_err());
    }
}
