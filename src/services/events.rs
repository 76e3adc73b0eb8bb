//! `containerd.services.events.v1.Events` (gRPC) and the ttrpc `Forward` that shims call,
//! over the [`Exchange`](crate::events::Exchange).

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::events::{
    Events, ForwardRequest, PublishRequest, SubscribeRequest, METHOD_EVENTS_FORWARD,
    METHOD_EVENTS_PUBLISH, METHOD_EVENTS_SUBSCRIBE,
};
use crate::api::events_ttrpc;
use crate::api::types::Envelope;
use crate::api::Empty;
use crate::errdefs::Error;
use crate::events::{Exchange, Next};
use crate::plugin::{types, GrpcServices, Instance, Registration, TtrpcServices};
use crate::rpc::{Call, RpcResult, WaitingSender};

/// The events service over one exchange.
pub struct EventsService {
    exchange: Arc<Exchange>,
}

impl EventsService {
    pub fn new(exchange: Arc<Exchange>) -> Self {
        EventsService { exchange }
    }
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
}

/// `Subscribe` as a waiting future (on the one waiting thread, `crate::waiting`, not a
/// thread per subscriber): send what is queued, then wait for news or for the client to
/// leave.
fn subscribe(
    exchange: &Exchange,
    req: SubscribeRequest,
    mut out: WaitingSender<Envelope>,
) -> impl std::future::Future<Output = (WaitingSender<Envelope>, RpcResult<()>)> + Send + 'static {
    let subscription = exchange.subscribe(&req.filters);
    async move {
        let subscription = match subscription {
            Ok(subscription) => subscription,
            Err(err) => return (out, Err(err)),
        };
        loop {
            match subscription.try_next() {
                Next::Event(envelope) => {
                    if let Err(err) = out.send(*envelope).await {
                        return (out, Err(err));
                    }
                }
                Next::Ended => return (out, Ok(())),
                Next::Empty => {
                    let gone = std::future::poll_fn(|cx| {
                        if subscription.poll_news(cx).is_ready() {
                            return std::task::Poll::Ready(false);
                        }
                        if out.poll_closed(cx) {
                            return std::task::Poll::Ready(true);
                        }
                        std::task::Poll::Pending
                    })
                    .await;
                    if gone {
                        return (out, Ok(()));
                    }
                }
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
    /// The generated glue, except that Subscribe waits on the shared waiters thread.
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        const SERVICE: &str = "containerd.services.events.v1.Events";
        let publish = Arc::new(EventsService {
            exchange: self.exchange.clone(),
        });
        let forward = publish.clone();
        let exchange = self.exchange.clone();
        let service = grpcio::ServiceBuilder::new()
            .add_unary_handler(&METHOD_EVENTS_PUBLISH, move |ctx, req, sink| {
                let s = publish.clone();
                crate::rpc::unary(ctx, req, sink, SERVICE, "Publish", move |call, req| {
                    s.publish(call, req)
                })
            })
            .add_unary_handler(&METHOD_EVENTS_FORWARD, move |ctx, req, sink| {
                let s = forward.clone();
                crate::rpc::unary(ctx, req, sink, SERVICE, "Forward", move |call, req| {
                    Events::forward(&*s, call, req)
                })
            })
            .add_server_streaming_handler(&METHOD_EVENTS_SUBSCRIBE, move |ctx, req, sink| {
                let exchange = exchange.clone();
                crate::rpc::server_streaming_waiting(
                    ctx,
                    req,
                    sink,
                    SERVICE,
                    "Subscribe",
                    move |_call, req, out| subscribe(&exchange, req, out),
                )
            })
            .build();
        vec![service]
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
        let call = Arc::new(Call::for_test(
            "containerd.services.events.v1.Events",
            "Subscribe",
            &[],
        ));
        let (out, client) = WaitingSender::in_memory(call);
        let req = SubscribeRequest {
            filters: vec!["topic==\"/wanted\"".into()],
            ..Default::default()
        };
        let waiting = subscribe(&exchange, req, out);
        let handler = std::thread::spawn(move || futures_executor::block_on(waiting).1);
        assert_eq!(
            exchange.subscribers(),
            1,
            "subscribed before the first poll"
        );

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
        let deadline = Instant::now() + Duration::from_secs(10);
        while exchange.subscribers() != 0 {
            exchange
                .publish(
                    "default",
                    "/x",
                    crate::events::any_of(&Empty::default()).unwrap(),
                )
                .unwrap();
            assert!(Instant::now() < deadline, "the ended subscription was kept");
        }
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
