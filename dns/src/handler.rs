//! Which part answers a request: names in the local zones (and anything that is not a plain
//! one-question query) go to the catalog of local zones; names in a forwarded zone go to the
//! relay for that zone's servers; every other name goes to the relay for the upstreams. A
//! name's zone is the longest one that holds it ([`ZoneTable`]).
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{MessageType, OpCode};
use hickory_server::proto::rr::LowerName;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;
use std::sync::Arc;

use crate::forward::{Route, ZoneTable};
use crate::relay::Relay;

pub struct LabHandler {
    catalog: Catalog,
    local: Vec<LowerName>,
    zones: ZoneTable,
    /// Whether names under no zone go upstream (else the catalog refuses them).
    upstreams: bool,
    relay: Option<Arc<Relay>>,
}

impl LabHandler {
    /// `local`: the origins of the zones in `catalog`; names under them are never forwarded.
    /// `zones`: those and the forwarded zones; `upstreams`: whether there are default
    /// upstreams for the rest.
    pub fn new(
        catalog: Catalog,
        local: Vec<LowerName>,
        zones: ZoneTable,
        upstreams: bool,
        relay: Option<Arc<Relay>>,
    ) -> Self {
        LabHandler {
            catalog,
            local,
            zones,
            upstreams,
            relay,
        }
    }

    /// Where `request` goes: None for the catalog, else the relay's target (None: the
    /// upstreams, Some(i): forward i).
    fn forwarded(&self, request: &Request) -> Option<Option<usize>> {
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
        if !self.zones.has_forwards() {
            // The common case, kept as short as it was: own zones or the upstreams.
            let local = self.local.iter().any(|z| z.zone_of(q.name()));
            return (!local && self.upstreams).then_some(None);
        }
        match self.zones.route(q.name()) {
            Route::Local => None,
            Route::Forward(i) => Some(Some(i)),
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
