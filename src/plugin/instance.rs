//! What an initialised plugin hands back: its value plus the optional roles listeners use.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Builds a fresh set of gRPC services (grpcio services are consumed by each server, so the
/// unix and TCP listeners each ask for their own copy).
pub trait GrpcServices: Send + Sync {
    fn grpc_services(&self) -> Vec<grpcio::Service>;
    /// Services also offered on the TCP listener (containerd's `RegisterTCP`).
    fn tcp_services(&self) -> Vec<grpcio::Service> {
        Vec::new()
    }
}

/// Builds the ttrpc services a plugin offers on the ttrpc socket.
pub trait TtrpcServices: Send + Sync {
    fn ttrpc_services(&self) -> HashMap<String, Box<dyn ttrpc::sync::MethodHandler + Send + Sync>>;
}

type CloseFn = Box<dyn FnOnce() + Send>;

/// An initialised plugin.
pub struct Instance {
    value: Arc<dyn Any + Send + Sync>,
    grpc: Option<Arc<dyn GrpcServices>>,
    ttrpc: Option<Arc<dyn TtrpcServices>>,
    close: Mutex<Option<CloseFn>>,
}

impl Instance {
    /// An instance whose value other plugins can look up by its concrete type.
    pub fn new<T: Any + Send + Sync>(value: Arc<T>) -> Self {
        Instance {
            value,
            grpc: None,
            ttrpc: None,
            close: Mutex::new(None),
        }
    }

    pub fn with_grpc(mut self, grpc: Arc<dyn GrpcServices>) -> Self {
        self.grpc = Some(grpc);
        self
    }

    pub fn with_ttrpc(mut self, ttrpc: Arc<dyn TtrpcServices>) -> Self {
        self.ttrpc = Some(ttrpc);
        self
    }

    /// Runs `close` once when the daemon stops (in reverse init order).
    pub fn with_close(self, close: impl FnOnce() + Send + 'static) -> Self {
        *self.close.lock() = Some(Box::new(close));
        self
    }

    /// The value as `T`, if that is its type.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.value.clone().downcast::<T>().ok()
    }

    pub fn grpc(&self) -> Option<&Arc<dyn GrpcServices>> {
        self.grpc.as_ref()
    }

    pub fn ttrpc(&self) -> Option<&Arc<dyn TtrpcServices>> {
        self.ttrpc.as_ref()
    }

    /// Runs the close hook if there is one and it has not run yet.
    pub fn close(&self) {
        let hook = self.close.lock().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}
