//! `QuotaService`: permits for callers that talk to Clerk themselves.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{auth, call_deadline, convert, status, wire::quota_service_server::QuotaService};
use crate::{
    admission::{Admission, AdmissionError, Demand},
    callers, pb,
};

/// Longest `max_wait` a caller may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(300);

/// The `QuotaService` implementation.
#[derive(Debug, Clone)]
pub struct QuotaApi {
    admission: Arc<Admission>,
}

impl QuotaApi {
    /// Grants permits from `admission`'s budgets.
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }
}

#[tonic::async_trait]
impl QuotaService for QuotaApi {
    async fn acquire_permit(
        &self,
        request: Request<pb::AcquirePermitRequest>,
    ) -> Result<Response<pb::AcquirePermitResponse>, Status> {
        let call_deadline = call_deadline(request.metadata());
        let caller = auth::caller(&request);
        let request = request.into_inner();
        let mut violations = convert::Violations::new();
        let priority = convert::priority(request.priority, &mut violations);
        let max_wait = match request.max_wait.as_ref().map(convert::duration) {
            None => Duration::ZERO,
            Some(Some(wait)) if wait <= MAX_WAIT => wait,
            Some(_) => {
                violations.push((
                    "max_wait".to_owned(),
                    "must be between 0 and 300s".to_owned(),
                ));
                Duration::ZERO
            }
        };
        // Checked here, so that no status repeats a name of any length.
        if !request.budget.is_empty() && !callers::is_valid_name(&request.budget) {
            violations.push((
                "budget".to_owned(),
                "must be empty (the upstream budget) or a budget's name: 1 to 64 characters of \
                 letters, digits, '-', '_' and '.'"
                    .to_owned(),
            ));
        }
        status::check(violations)?;
        // Never wait past the call's own deadline.
        let mut deadline = Instant::now() + max_wait;
        if let Some(call_deadline) = call_deadline {
            deadline = deadline.min(call_deadline);
        }
        auth::require_budget(&caller, &request.budget)?;
        let demand = Demand {
            caller: caller.name.clone(),
            weight: caller.weight,
            priority,
            deadline,
        };
        let budget = self
            .admission
            .budget(&request.budget)
            .map_err(|error| status::admission(&error))?;
        let rate = budget.rate();
        let mut reply = pb::AcquirePermitResponse {
            budget: budget.name().to_owned(),
            limit: rate.limit,
            window: Some(convert::proto_duration(rate.window)),
            ..Default::default()
        };
        match budget.acquire(&demand, request.cost).await {
            Ok(permit) => {
                // The caller makes its requests itself: they count from now.
                reply.granted = true;
                reply.waited = Some(convert::proto_duration(permit.waited));
            }
            Err(AdmissionError::Refused { retry_after }) => {
                reply.retry_after = Some(convert::proto_duration(retry_after));
                reply.waited = Some(convert::proto_duration(Duration::ZERO));
            }
            Err(error) => return Err(status::admission(&error)),
        }
        Ok(Response::new(reply))
    }
}
