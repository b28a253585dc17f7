//! `gis.locate`: the ward, borough and beat a point lies in, from the
//! tenant's boundary set ([`crate::resources::boundaries`]).

use std::collections::HashMap;

use crate::definition::FieldType;
use crate::log::TenantId;
use crate::resources::boundaries::{BoundarySet, Coordinates};
use crate::resources::{ParsedCache, ResourceKind};

use super::super::service::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};
use super::resource_error;

/// The service's name.
pub const NAME: &str = "gis.locate";

/// The boundary set a tenant uses unless configured otherwise.
pub const DEFAULT_SET: &str = "wards";

/// Locates a point: input `point` (geo_point, for a set in longitude and
/// latitude) or `easting` and `northing` (decimals, for a set in British
/// National Grid metres), whichever the tenant's boundary set uses; output
/// `ward`, and `borough` and `beat` where the set names them.
///
/// Each tenant's boundary set is the resource `boundaries` / `wards`
/// ([`crate::Engine::deploy_resource`]), or the name configured with
/// [`GisService::with_set`]. A point outside every area, a set never
/// deployed or an input in the wrong system is a permanent error (an
/// incident on the case), never a guess.
///
/// ```
/// use casebook::orchestration::builtin::GisService;
/// use casebook::orchestration::BusinessService;
/// assert_eq!(GisService::new().name(), "gis.locate");
/// ```
#[derive(Debug)]
pub struct GisService {
    sets: HashMap<TenantId, String>,
    cache: ParsedCache<BoundarySet>,
}

impl Default for GisService {
    fn default() -> Self {
        GisService::new()
    }
}

impl GisService {
    /// Every tenant's boundary set `wards`.
    pub fn new() -> Self {
        GisService {
            sets: HashMap::new(),
            cache: ParsedCache::new(ResourceKind::Boundaries, BoundarySet::parse),
        }
    }

    /// This service using boundary set `name` for `tenant`.
    pub fn with_set(mut self, tenant: TenantId, name: impl Into<String>) -> Self {
        self.sets.insert(tenant, name.into());
        self
    }
}

fn number(input: &ServiceValues, name: &str) -> Result<Option<f64>, ServiceError> {
    match input.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| ServiceError::permanent(format!("'{name}' must be a number"))),
    }
}

#[async_trait::async_trait]
impl BusinessService for GisService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("point", FieldType::GeoPoint, false)
            .input("easting", FieldType::Decimal, false)
            .input("northing", FieldType::Decimal, false)
            .output("ward", FieldType::Text)
            .output("borough", FieldType::Text)
            .output("beat", FieldType::Text)
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let name = self
            .sets
            .get(&ctx.tenant)
            .map_or(DEFAULT_SET, String::as_str);
        let (version, set) = self
            .cache
            .get(&ctx.resources, name)
            .await
            .map_err(resource_error)?;
        let point = match input.get("point") {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => {
                let lat = p.get("lat").and_then(|v| v.as_f64());
                let lon = p.get("lon").and_then(|v| v.as_f64());
                match (lat, lon) {
                    (Some(lat), Some(lon))
                        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                    {
                        Some((lon, lat))
                    }
                    _ => {
                        return Err(ServiceError::permanent(
                            "'point' must be { lat, lon } in degrees",
                        ))
                    }
                }
            }
        };
        let grid = match (number(&input, "easting")?, number(&input, "northing")?) {
            (Some(e), Some(n)) => Some((e, n)),
            (None, None) => None,
            _ => {
                return Err(ServiceError::permanent(
                    "give both 'easting' and 'northing', or neither",
                ))
            }
        };
        let (x, y) = match (set.coordinates(), point, grid) {
            (Coordinates::LonLat, Some(p), _) => p,
            (Coordinates::EastingNorthing, _, Some(g)) => g,
            (c, _, _) => {
                let wanted = match c {
                    Coordinates::LonLat => "'point' (lat, lon)",
                    Coordinates::EastingNorthing => "'easting' and 'northing'",
                };
                return Err(ServiceError::permanent(format!(
                    "boundary set '{name}' is in {}: give {wanted}",
                    c.as_str()
                )));
            }
        };
        let area = set.locate(x, y).ok_or_else(|| {
            ServiceError::permanent(format!(
                "({x}, {y}) lies in no area of boundary set '{name}' version {version}"
            ))
        })?;
        let mut out = ServiceValues::new();
        out.insert("ward".into(), area.ward.clone().into());
        if let Some(b) = &area.borough {
            out.insert("borough".into(), b.clone().into());
        }
        if let Some(b) = &area.beat {
            out.insert("beat".into(), b.clone().into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ItemKey;
    use crate::engine::Engine;
    use crate::security::Principal;
    use serde_json::json;

    const WARDS: &str = include_str!("../../../../examples/resources/wards.geojson");

    async fn engine_with_wards() -> (Engine, TenantId) {
        let kent = TenantId::new("kent").unwrap();
        let engine = Engine::in_memory_with(crate::engine::EngineConfig {
            tenants: vec![kent.clone(), TenantId::new("essex").unwrap()],
            ..Default::default()
        })
        .unwrap();
        let admin = Principal::new(kent.clone(), "admin").with_roles(["administrator"]);
        engine
            .deploy_resource(&admin, ResourceKind::Boundaries, "wards", WARDS)
            .await
            .unwrap();
        (engine, kent)
    }

    fn ctx(engine: &Engine, tenant: &str) -> ServiceContext {
        let tenant = TenantId::new(tenant).unwrap();
        ServiceContext::new(
            tenant.clone(),
            "c",
            ItemKey::new("locate"),
            engine.tenant_resources(&tenant),
        )
    }

    fn point(lat: f64, lon: f64) -> ServiceValues {
        [("point".to_string(), json!({"lat": lat, "lon": lon}))].into()
    }

    #[tokio::test]
    async fn a_point_resolves_to_its_ward_borough_and_beat() {
        let (engine, _) = engine_with_wards().await;
        let gis = GisService::new();
        let out = gis
            .invoke(&ctx(&engine, "kent"), point(51.2802, 1.0789))
            .await
            .unwrap();
        assert_eq!(out["ward"], json!("Westgate"));
        assert_eq!(out["borough"], json!("Canterbury"));
        assert_eq!(out["beat"], json!("CB-3"));
        let out = gis
            .invoke(&ctx(&engine, "kent"), point(51.29, 1.095))
            .await
            .unwrap();
        assert_eq!(out["ward"], json!("Northgate"));
    }

    #[tokio::test]
    async fn outside_every_area_another_tenant_or_bad_input_is_a_permanent_error() {
        let (engine, _) = engine_with_wards().await;
        let gis = GisService::new();
        // Dover is outside every sample ward.
        let err = gis
            .invoke(&ctx(&engine, "kent"), point(51.1279, 1.3134))
            .await
            .unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains("no area"),
            "{err}"
        );
        // Essex never deployed a boundary set: Kent's is not visible to it.
        let err = gis
            .invoke(&ctx(&engine, "essex"), point(51.2802, 1.0789))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no boundaries 'wards'"), "{err}");
        for bad in [
            [("point".to_string(), json!({"lat": 200, "lon": 1}))].into(),
            [("easting".to_string(), json!(615000))].into(),
            ServiceValues::new(),
        ] {
            let err = gis.invoke(&ctx(&engine, "kent"), bad).await.unwrap_err();
            assert!(!err.is_retryable(), "{err}");
        }
    }

    #[tokio::test]
    async fn malformed_geojson_is_refused_at_deploy_with_its_path() {
        let (engine, kent) = engine_with_wards().await;
        let admin = Principal::new(kent, "admin").with_roles(["administrator"]);
        let err = engine
            .deploy_resource(
                &admin,
                ResourceKind::Boundaries,
                "wards",
                "{\"type\": \"Feature",
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not GeoJSON"), "{err}");
        // The set deployed before is still the one in use.
        let out = GisService::new()
            .invoke(&ctx(&engine, "kent"), point(51.2802, 1.0789))
            .await
            .unwrap();
        assert_eq!(out["ward"], json!("Westgate"));
    }
}
