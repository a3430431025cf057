//! Which part answers a request: names in the local zones (and anything that is not a plain
//! one-question query) go to the catalog of local zones; every other name goes to the relay.
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{MessageType, OpCode};
use hickory_server::proto::rr::LowerName;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;
use std::sync::Arc;

use crate::relay::Relay;

pub struct LabHandler {
    catalog: Catalog,
    local: Vec<LowerName>,
    relay: Option<Arc<Relay>>,
}

impl LabHandler {
    /// `local`: the origins of the zones in `catalog`; names under them are never forwarded.
    pub fn new(catalog: Catalog, local: Vec<LowerName>, relay: Option<Arc<Relay>>) -> Self {
        LabHandler {
            catalog,
            local,
            relay,
        }
    }

    /// Whether `request` goes upstream.
    fn forwarded(&self, request: &Request) -> bool {
        let m = &request.metadata;
        if self.relay.is_none()
            || m.message_type != MessageType::Query
            || m.op_code != OpCode::Query
        {
            return false;
        }
        match request.queries.queries() {
            [q] => !self.local.iter().any(|z| z.zone_of(q.name())),
            _ => false,
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
        match &self.relay {
            Some(relay) if self.forwarded(request) => {
                relay.handle::<R, T>(request, response_handle).await
            }
            _ => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}
