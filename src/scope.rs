//! The scope a request works in: its namespace and the lease (if any) that holds what it
//! creates. Built once from a call's headers (`crate::rpc::Call::scope`) and passed as one
//! value through services, the metadata store and differs.

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    namespace: String,
    lease: Option<String>,
}

impl Scope {
    /// The scope of `namespace`, without a lease.
    pub fn new(namespace: impl Into<String>) -> Self {
        Scope {
            namespace: namespace.into(),
            lease: None,
        }
    }

    /// The same scope working under `lease` (none when `None` or empty).
    pub fn with_lease(mut self, lease: Option<impl Into<String>>) -> Self {
        self.lease = lease.map(Into::into).filter(|l: &String| !l.is_empty());
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The lease that holds what this scope creates, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lease_means_none() {
        let scope = Scope::new("default").with_lease(Some(""));
        assert_eq!(scope.namespace(), "default");
        assert_eq!(scope.lease(), None);
        let leased = Scope::new("default").with_lease(Some("l1"));
        assert_eq!(leased.lease(), Some("l1"));
    }
}
