//! The `casebook.v1.Admin` service: a tenant's projections and working-day
//! calendar, for its administrators; the tenant registry, for platform
//! administrators.

use casebook_engine::calendar;
use casebook_engine::engine::{
    CommandContext, Engine, TenantChange, TenantProjectionStatus, TenantRecord, TenantRunState,
    TenantStatus, ADMIN_ROLE,
};
use casebook_engine::log::TenantId;
use casebook_engine::security::Principal;
use casebook_proto::v1 as pb;
use casebook_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::convert;
use crate::status::{invalid, status};

/// The Admin service over an engine.
#[derive(Clone)]
pub struct AdminService {
    engine: Engine,
}

impl AdminService {
    /// The service for `engine`.
    pub fn new(engine: Engine) -> Self {
        AdminService { engine }
    }

    fn admin<T>(request: &Request<T>) -> Result<Principal, Status> {
        let p = caller(request)?;
        if !p.has_role(ADMIN_ROLE) {
            return Err(Status::permission_denied(format!(
                "administration takes the role {ADMIN_ROLE}"
            )));
        }
        Ok(p)
    }

    async fn status_of(
        &self,
        p: &Principal,
    ) -> Result<Response<pb::ProjectionStatusResponse>, Status> {
        let all = self
            .engine
            .projection_status(p)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ProjectionStatusResponse {
            projections: all.iter().map(info).collect(),
            at: Some(convert::timestamp(self.engine.now())),
        }))
    }
}

fn tenant_info(r: &TenantRecord) -> pb::TenantInfo {
    pb::TenantInfo {
        tenant: r.tenant.to_string(),
        status: match r.status {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
        .to_string(),
        registered_at: Some(convert::timestamp(r.registered_at)),
        changed_at: Some(convert::timestamp(r.changed_at)),
    }
}

fn tenant_of(request: &pb::TenantRequest) -> Result<TenantId, Status> {
    TenantId::new(&request.tenant).map_err(|e| invalid("tenant", e))
}

impl AdminService {
    /// Runs a registry change as the caller (the engine checks that they
    /// are a platform administrator) and answers with the tenant's record.
    async fn change_tenant<F, Fut>(
        &self,
        request: Request<pb::TenantRequest>,
        change: F,
    ) -> Result<Response<pb::TenantResponse>, Status>
    where
        F: FnOnce(Engine, Principal, TenantId) -> Fut,
        Fut: std::future::Future<
            Output = Result<TenantChange, casebook_engine::engine::EngineError>,
        >,
    {
        let p = caller(&request)?;
        let tenant = tenant_of(request.get_ref())?;
        let changed = change(self.engine.clone(), p.clone(), tenant.clone())
            .await
            .map_err(|e| status(&e))?;
        let all = self.engine.tenants(&p).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::TenantResponse {
            tenant: all.iter().find(|r| r.tenant == tenant).map(tenant_info),
            changed: changed == TenantChange::Changed,
        }))
    }
}

fn info(s: &TenantProjectionStatus) -> pb::ProjectionInfo {
    let (state, fault) = match &s.state {
        TenantRunState::CatchingUp => ("catching_up", String::new()),
        TenantRunState::Live => ("live", String::new()),
        TenantRunState::Rebuilding => ("rebuilding", String::new()),
        TenantRunState::Stopped => ("stopped", String::new()),
        TenantRunState::Faulted { position, error } => (
            "faulted",
            format!("at position {}: {error}", convert::wire(*position)),
        ),
    };
    pb::ProjectionInfo {
        name: s.projection.clone(),
        version: s.version,
        state: state.to_string(),
        position: convert::wire(s.position),
        pending: s.pending,
        events_per_second: s.events_per_second,
        fault,
        rebuild_position: s.rebuild.as_ref().map(|r| convert::wire(r.position)),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn projection_status(
        &self,
        request: Request<pb::ProjectionStatusRequest>,
    ) -> Result<Response<pb::ProjectionStatusResponse>, Status> {
        let p = Self::admin(&request)?;
        self.status_of(&p).await
    }

    async fn rebuild_projection(
        &self,
        request: Request<pb::ProjectionRequest>,
    ) -> Result<Response<pb::ProjectionStatusResponse>, Status> {
        let p = Self::admin(&request)?;
        self.engine
            .rebuild_projection(&p, &request.get_ref().name)
            .await
            .map_err(|e| status(&e))?;
        self.status_of(&p).await
    }

    async fn retry_projection(
        &self,
        request: Request<pb::ProjectionRequest>,
    ) -> Result<Response<pb::ProjectionStatusResponse>, Status> {
        let p = Self::admin(&request)?;
        self.engine
            .retry_projection(&p, &request.get_ref().name)
            .await
            .map_err(|e| status(&e))?;
        self.status_of(&p).await
    }

    async fn set_non_working_days(
        &self,
        request: Request<pb::SetNonWorkingDaysRequest>,
    ) -> Result<Response<pb::SetNonWorkingDaysResponse>, Status> {
        let p = Self::admin(&request)?;
        let dates = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, d)| {
                    calendar::parse_date(d).map_err(|e| invalid(&format!("{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let r = request.get_ref();
        let days = dates("days", &r.days)?;
        let worked = dates("working_bank_holidays", &r.working_bank_holidays)?;
        let working = calendar::WorkingCalendar::with_non_working_days(days)
            .working_bank_holidays(worked.iter().copied())
            .map_err(|e| {
                let i = worked
                    .iter()
                    .position(|d| calendar::format_date(*d) == e.day)
                    .unwrap_or(0);
                invalid(&format!("working_bank_holidays[{i}]"), e)
            })?;
        let position = self
            .engine
            .set_working_calendar(
                &p,
                &working,
                CommandContext::because("set over the Admin API"),
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::SetNonWorkingDaysResponse {
            position: convert::wire(position),
        }))
    }

    async fn deploy_resource(
        &self,
        request: Request<pb::DeployResourceRequest>,
    ) -> Result<Response<pb::DeployResourceResponse>, Status> {
        let p = Self::admin(&request)?;
        let r = request.get_ref();
        let kind = convert::resource_kind(r.kind)?;
        let deployed = self
            .engine
            .deploy_resource(&p, kind, &r.name, &r.source)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeployResourceResponse {
            kind: r.kind,
            name: deployed.name,
            version: deployed.version,
            newly_deployed: deployed.newly_deployed,
        }))
    }

    async fn register_tenant(
        &self,
        request: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        self.change_tenant(
            request,
            |e, p, t| async move { e.register_tenant(&p, &t).await },
        )
        .await
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        self.change_tenant(
            request,
            |e, p, t| async move { e.suspend_tenant(&p, &t).await },
        )
        .await
    }

    async fn reactivate_tenant(
        &self,
        request: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        self.change_tenant(request, |e, p, t| async move {
            e.reactivate_tenant(&p, &t).await
        })
        .await
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let p = caller(&request)?;
        let all = self.engine.tenants(&p).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: all.iter().map(tenant_info).collect(),
        }))
    }
}
