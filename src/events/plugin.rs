//! `io.containerd.event.v1.exchange`: the one exchange every plugin publishes to.

use std::sync::Arc;

use super::Exchange;
use crate::plugin::{types, Instance, Registration};

/// `io.containerd.event.v1.exchange`; closing it ends every subscription.
pub fn registration() -> Registration {
    Registration::new(types::EVENT, "exchange", |_ic| {
        let exchange = Arc::new(Exchange::new());
        let closing = exchange.clone();
        Ok(Instance::new(exchange).with_close(move || closing.close()))
    })
}
