//! `containerd.services.events.v1.Events` (gRPC) and the ttrpc `Forward` that shims call,
//! over the [`Exchange`](crate::events::Exchange).

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::events::{create_events, Events, ForwardRequest, PublishRequest, SubscribeRequest};
use crate::api::events_ttrpc;
use crate::api::types::Envelope;
use crate::api::Empty;
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::plugin::{types, GrpcServices, Instance, Registration, TtrpcServices};
use crate::rpc::{Call, RpcResult, StreamSender};

/// The events service over one exchange.
pub struct EventsService {
    exchange: Arc<Exchange>,
}

impl Events for EventsService {
    fn publish(&self, call: &Call, req: PublishRequest) -> RpcResult<Empty> {
        let namespace = call
            .namespace_required()
            .map_err(|err| err.context("failed publishing event"))?;
        let event = req.event.into_option().unwrap_or_default();
        self.exchange.publish(namespace, &req.topic, event)?;
        Ok(Empty::default())
    }

    fn forward(&self, _call: &Call, req: ForwardRequest) -> RpcResult<Empty> {
        forward(&self.exchange, req.envelope.into_option())
    }

    fn subscribe(
        &self,
        _call: &Call,
        req: SubscribeRequest,
        out: &mut StreamSender<Envelope>,
    ) -> RpcResult<()> {
        let subscription = self.exchange.subscribe(&req.filters)?;
        loop {
            // Wait for an event or for the client to leave, whichever comes first.
            let closed = out.closed_signal();
            crossbeam_channel::select! {
                recv(subscription.events) -> envelope => match envelope {
                    Ok(envelope) => out.send(envelope)?,
                    Err(_) => return Ok(()),
                },
                recv(closed) -> _ => return Ok(()),
            }
        }
    }
}

fn forward(exchange: &Exchange, envelope: Option<Envelope>) -> RpcResult<Empty> {
    let envelope = envelope
        .ok_or_else(|| Error::invalid_argument("envelope must be set: invalid argument"))?;
    exchange.forward(envelope)?;
    Ok(Empty::default())
}

impl events_ttrpc::Events for EventsService {
    fn forward(
        &self,
        _ctx: &ttrpc::TtrpcContext,
        req: events_ttrpc::ForwardRequest,
    ) -> ttrpc::Result<Empty> {
        forward(&self.exchange, req.envelope.into_option()).map_err(ttrpc::Error::from)
    }
}

impl GrpcServices for EventsService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_events(Arc::new(EventsService {
            exchange: self.exchange.clone(),
        }))]
    }
}

impl TtrpcServices for EventsService {
    fn ttrpc_services(&self) -> HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> {
        events_ttrpc::create_events(Arc::new(EventsService {
            exchange: self.exchange.clone(),
        }))
    }
}

/// `io.containerd.grpc.v1.events` (the exchange itself registers in `crate::events::plugin`).
pub fn registrations() -> Vec<Registration> {
    vec![Registration::new(types::GRPC, "events", |ic| {
        let exchange = ic.single::<Exchange>(types::EVENT)?;
        let service = Arc::new(EventsService { exchange });
        Ok(Instance::new(service.clone())
            .with_grpc(service.clone())
            .with_ttrpc(service))
    })
    .requires(&[types::EVENT])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errdefs::Class;
    use std::time::{Duration, Instant};

    #[test]
    fn subscribe_streams_matching_events_until_the_client_leaves() {
        let exchange = Arc::new(Exchange::new());
        let service = EventsService {
            exchange: exchange.clone(),
        };
        let call = Arc::new(Call::for_test(
            "containerd.services.events.v1.Events",
            "Subscribe",
            &[],
        ));
        let (mut out, client) = StreamSender::in_memory(call.clone());
        let req = SubscribeRequest {
            filters: vec!["topic==\"/wanted\"".into()],
            ..Default::default()
        };
        let handler = std::thread::spawn(move || service.subscribe(&call, req, &mut out));
        let deadline = Instant::now() + Duration::from_secs(10);
        while exchange.subscribers() == 0 {
            assert!(Instant::now() < deadline, "the handler never subscribed");
            std::thread::yield_now();
        }

        let any = crate::events::any_of(&Empty::default()).unwrap();
        exchange.publish("default", "/other", any.clone()).unwrap();
        exchange.publish("default", "/wanted", any).unwrap();
        let got = client
            .messages
            .recv_timeout(Duration::from_secs(10))
            .expect("the matching event arrives");
        assert_eq!(got.topic, "/wanted");
        assert_eq!(got.namespace, "default");
        assert!(
            client.messages.try_recv().is_err(),
            "only the match is sent"
        );

        drop(client);
        handler
            .join()
            .expect("handler thread")
            .expect("a client that leaves ends the stream cleanly");
    }

    #[test]
    fn ttrpc_forward_refuses_an_empty_envelope_with_invalid_argument() {
        let service = EventsService {
            exchange: Arc::new(Exchange::new()),
        };
        let err = forward(&service.exchange, None).unwrap_err();
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(err) else {
            panic!("a status");
        };
        assert_eq!(status.code.value(), Class::InvalidArgument.code());
        assert_eq!(status.message, "envelope must be set: invalid argument");
    }
}
