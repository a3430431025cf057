//! Forwarding to the lab's upstreams: hickory's [`ForwardZoneHandler`] wrapped so that every
//! forwarded query has a hard deadline (SERVFAIL when it passes, never a hang) and the number
//! of queries waiting on upstreams is bounded (a flood gets SERVFAIL instead of eating file
//! descriptors and memory).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts, ServerOrderingStrategy};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, ZoneHandler, ZoneType,
};
use tokio::sync::Semaphore;

use crate::Error;

/// Most queries waiting on upstreams at once; beyond that new ones get SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 4096;

pub struct BoundedForwarder {
    inner: ForwardZoneHandler,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl BoundedForwarder {
    /// A forwarder for every name (origin `.`) to `upstreams`, tried in order of their
    /// measured speed with failover; `cache_size` 0 disables the cache.
    pub fn new(upstreams: &[SocketAddr], timeout: Duration, cache_size: usize) -> Result<Self, Error> {
        let name_servers = upstreams
            .iter()
            .map(|u| {
                let mut udp = ConnectionConfig::udp();
                udp.port = u.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = u.port();
                NameServerConfig::new(u.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        // One try per upstream within the deadline; failover comes from asking the next one.
        opts.attempts = 1;
        opts.cache_size = cache_size as u64;
        // Two upstreams are asked in parallel: a dead first upstream costs no time at all.
        opts.num_concurrent_reqs = 2;
        opts.server_ordering_strategy = ServerOrderingStrategy::QueryStatistics;
        opts.max_active_requests = MAX_IN_FLIGHT;
        opts.try_tcp_on_error = true;
        // Upstream TTLs are passed through as they are (counting down in the cache).
        opts.positive_min_ttl = None;
        opts.negative_min_ttl = None;
        let inner = ForwardZoneHandler::builder_tokio(ForwardConfig {
            name_servers,
            options: Some(opts),
        })
        .with_origin(Name::root())
        .build()
        .map_err(|message| Error::Config {
            field: "dns.upstreams".into(),
            message,
        })?;
        Ok(BoundedForwarder {
            inner,
            timeout,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }
}

fn servfail() -> LookupControlFlow<AuthLookup> {
    LookupControlFlow::Continue(Err(LookupError::from(ResponseCode::ServFail)))
}

#[async_trait::async_trait]
impl ZoneHandler for BoundedForwarder {
    fn zone_type(&self) -> ZoneType {
        ZoneType::External
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        self.inner.origin()
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let Ok(_slot) = self.slots.try_acquire() else {
            return servfail();
        };
        match tokio::time::timeout(
            self.timeout,
            self.inner.lookup(name, rtype, request_info, lookup_options),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => servfail(),
        }
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let Ok(_slot) = self.slots.try_acquire() else {
            return (servfail(), None);
        };
        match tokio::time::timeout(self.timeout, self.inner.search(request, lookup_options)).await {
            Ok(r) => r,
            Err(_) => (servfail(), None),
        }
    }

    async fn nsec_records(&self, name: &LowerName, lookup_options: LookupOptions) -> LookupControlFlow<AuthLookup> {
        self.inner.nsec_records(name, lookup_options).await
    }
}
