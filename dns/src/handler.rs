//! Which part answers a request: names in the local zones (and anything that is not a plain
//! one-question query) go to the catalog of local zones; names in a forwarded zone go to the
//! relay for that zone's servers; every other name goes to the relay for the upstreams. A
//! name's zone is the longest one that holds it ([`ZoneTable`]).
use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{MessageType, OpCode};
use hickory_server::proto::rr::LowerName;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;
use std::sync::Arc;

use crate::forward::{Forwarding, Route};
use crate::relay::{Relay, Target};

pub struct LabHandler {
    catalog: Catalog,
    local: Vec<LowerName>,
    /// The zone table and forwards, shared by every thread's handler, swapped on reload.
    forwarding: Arc<ArcSwap<Forwarding>>,
    /// Whether names under no zone go upstream (else the catalog refuses them).
    upstreams: bool,
    relay: Option<Arc<Relay>>,
}

impl LabHandler {
    /// `local`: the origins of the zones in `catalog`; names under them are never forwarded.
    /// `forwarding`: those and the forwarded zones; `upstreams`: whether there are default
    /// upstreams for the rest.
    pub fn new(
        catalog: Catalog,
        local: Vec<LowerName>,
        forwarding: Arc<ArcSwap<Forwarding>>,
        upstreams: bool,
        relay: Option<Arc<Relay>>,
    ) -> Self {
        LabHandler {
            catalog,
            local,
            forwarding,
            upstreams,
            relay,
        }
    }

    /// Where `request` goes: None for the catalog, else the relay's target (None: the
    /// upstreams, else a forwarded zone's servers).
    fn forwarded(&self, request: &Request) -> Option<Option<Arc<Target>>> {
        let m = &request.metadata;
        if self.relay.is_none()
            || m.message_type != MessageType::Query
            || m.op_code != OpCode::Query
        {
            return None;
        }
        let [q] = request.queries.queries() else {
            return None;
        };
        let forwarding = self.forwarding.load();
        if !forwarding.table.has_forwards() {
            // The common case, kept as short as it was: own zones or the upstreams.
            let local = self.local.iter().any(|z| z.zone_of(q.name()));
            return (!local && self.upstreams).then_some(None);
        }
        match forwarding.table.route(q.name()) {
            Route::Local => None,
            Route::Forward(i) => Some(forwarding.targets.get(i).cloned()),
            Route::Upstream => self.upstreams.then_some(None),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for LabHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        match (&self.relay, self.forwarded(request)) {
            (Some(relay), Some(target)) => {
                relay.handle::<R, T>(request, response_handle, target).await
            }
            _ => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}
