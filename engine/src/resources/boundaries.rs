//! Boundary sets: the areas (ward, borough, beat) a tenant loads as a
//! GeoJSON `FeatureCollection`, and the lookup of the area a point lies in
//! (`geo`'s point-in-polygon, not a hand-written one).
//!
//! Each feature is a `Polygon` or `MultiPolygon` with string properties
//! `ward` (required), `borough` and `beat` (optional). The collection's
//! foreign member `"casebook:coordinates"` says what its positions are:
//! `"lon_lat"` (WGS84 longitude, latitude: the default, as RFC 7946 says)
//! or `"easting_northing"` (British National Grid metres). A point is
//! looked up in the same system; no conversion between the two is made.
//! Where areas overlap, the first feature in document order wins; a point
//! on a shared edge belongs to the first area that touches it.

use geo::{BoundingRect, Intersects, MultiPolygon, Point, Rect};
use geojson::GeoJson;

use super::ResourceProblem;

/// Most features one boundary set may hold.
pub const MAX_FEATURES: usize = 10_000;

/// What a boundary set's positions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coordinates {
    /// WGS84 longitude, latitude (degrees).
    LonLat,
    /// British National Grid easting, northing (metres).
    EastingNorthing,
}

impl Coordinates {
    /// Its name in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Coordinates::LonLat => "lon_lat",
            Coordinates::EastingNorthing => "easting_northing",
        }
    }
}

/// The names of the area a point lies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// The ward.
    pub ward: String,
    /// The borough (district), if the set names one.
    pub borough: Option<String>,
    /// The policing beat, if the set names one.
    pub beat: Option<String>,
}

#[derive(Debug)]
struct Boundary {
    area: Area,
    shape: MultiPolygon<f64>,
    bounds: Rect<f64>,
}

/// A parsed boundary set.
#[derive(Debug)]
pub struct BoundarySet {
    coordinates: Coordinates,
    boundaries: Vec<Boundary>,
}

fn text_property(
    props: Option<&geojson::JsonObject>,
    name: &str,
    path: &str,
    required: bool,
    problems: &mut Vec<ResourceProblem>,
) -> Option<String> {
    match props.and_then(|p| p.get(name)) {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(serde_json::Value::Null) if !required => None,
        None | Some(serde_json::Value::Null) => {
            problems.push(ResourceProblem::new(
                format!("{path}.properties.{name}"),
                format!("every area needs a '{name}' name"),
            ));
            None
        }
        Some(_) => {
            problems.push(ResourceProblem::new(
                format!("{path}.properties.{name}"),
                "must be a non-empty string",
            ));
            None
        }
    }
}

impl BoundarySet {
    /// Parses and checks a boundary set.
    ///
    /// Errors: every problem with its path (`features[3].geometry`, ...):
    /// malformed GeoJSON, a document that is not a `FeatureCollection`, a
    /// feature without a polygon or without a ward name, a non-finite
    /// coordinate, an unknown `casebook:coordinates`.
    pub fn parse(source: &str) -> Result<BoundarySet, Vec<ResourceProblem>> {
        let geojson: GeoJson = source.parse().map_err(|e: geojson::Error| {
            vec![ResourceProblem::new("", format!("not GeoJSON: {e}"))]
        })?;
        let GeoJson::FeatureCollection(collection) = geojson else {
            return Err(vec![ResourceProblem::new(
                "type",
                "a boundary set is a GeoJSON FeatureCollection",
            )]);
        };
        let mut problems = Vec::new();
        let coordinates = match collection
            .foreign_members
            .as_ref()
            .and_then(|m| m.get("casebook:coordinates"))
        {
            None => Coordinates::LonLat,
            Some(serde_json::Value::String(s)) if s == "lon_lat" => Coordinates::LonLat,
            Some(serde_json::Value::String(s)) if s == "easting_northing" => {
                Coordinates::EastingNorthing
            }
            Some(other) => {
                problems.push(ResourceProblem::new(
                    "casebook:coordinates",
                    format!("{other} is not 'lon_lat' or 'easting_northing'"),
                ));
                Coordinates::LonLat
            }
        };
        if collection.features.is_empty() {
            problems.push(ResourceProblem::new(
                "features",
                "no areas: add at least one",
            ));
        }
        if collection.features.len() > MAX_FEATURES {
            problems.push(ResourceProblem::new(
                "features",
                format!("at most {MAX_FEATURES} areas per boundary set"),
            ));
            return Err(problems);
        }
        let mut boundaries = Vec::with_capacity(collection.features.len());
        for (i, feature) in collection.features.into_iter().enumerate() {
            let path = format!("features[{i}]");
            let props = feature.properties.as_ref();
            let ward = text_property(props, "ward", &path, true, &mut problems);
            let borough = text_property(props, "borough", &path, false, &mut problems);
            let beat = text_property(props, "beat", &path, false, &mut problems);
            let Some(geometry) = feature.geometry else {
                problems.push(ResourceProblem::new(
                    format!("{path}.geometry"),
                    "an area needs a Polygon or MultiPolygon geometry",
                ));
                continue;
            };
            let shape: MultiPolygon<f64> = match geo::Geometry::<f64>::try_from(geometry) {
                Ok(geo::Geometry::Polygon(p)) => MultiPolygon(vec![p]),
                Ok(geo::Geometry::MultiPolygon(m)) => m,
                Ok(_) => {
                    problems.push(ResourceProblem::new(
                        format!("{path}.geometry"),
                        "an area must be a Polygon or MultiPolygon",
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(ResourceProblem::new(
                        format!("{path}.geometry"),
                        format!("not a geometry: {e}"),
                    ));
                    continue;
                }
            };
            let finite = shape.0.iter().all(|p| {
                std::iter::once(p.exterior())
                    .chain(p.interiors())
                    .flat_map(|r| r.0.iter())
                    .all(|c| c.x.is_finite() && c.y.is_finite())
            });
            let bounds = shape.bounding_rect();
            match (finite, bounds, ward) {
                (false, _, _) => problems.push(ResourceProblem::new(
                    format!("{path}.geometry"),
                    "every coordinate must be a finite number",
                )),
                (true, None, _) => problems.push(ResourceProblem::new(
                    format!("{path}.geometry"),
                    "the polygon has no points",
                )),
                (true, Some(bounds), Some(ward)) => boundaries.push(Boundary {
                    area: Area {
                        ward,
                        borough,
                        beat,
                    },
                    shape,
                    bounds,
                }),
                (true, Some(_), None) => {}
            }
        }
        if problems.is_empty() {
            Ok(BoundarySet {
                coordinates,
                boundaries,
            })
        } else {
            Err(problems)
        }
    }

    /// What the set's positions are.
    pub fn coordinates(&self) -> Coordinates {
        self.coordinates
    }

    /// How many areas it holds.
    pub fn len(&self) -> usize {
        self.boundaries.len()
    }

    /// Whether it holds no area (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.boundaries.is_empty()
    }

    /// The area `(x, y)` lies in (longitude, latitude or easting,
    /// northing, as [`BoundarySet::coordinates`] says), if any.
    pub fn locate(&self, x: f64, y: f64) -> Option<&Area> {
        let point = Point::new(x, y);
        self.boundaries
            .iter()
            .find(|b| b.bounds.intersects(&point) && b.shape.intersects(&point))
            .map(|b| &b.area)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_WARDS: &str = r#"{
      "type": "FeatureCollection",
      "features": [
        { "type": "Feature",
          "properties": { "ward": "Westgate", "borough": "Canterbury", "beat": "C3" },
          "geometry": { "type": "Polygon", "coordinates": [[[1.0, 51.0], [2.0, 51.0], [2.0, 52.0], [1.0, 52.0], [1.0, 51.0]]] } },
        { "type": "Feature",
          "properties": { "ward": "Northgate" },
          "geometry": { "type": "MultiPolygon", "coordinates": [[[[2.0, 51.0], [3.0, 51.0], [3.0, 52.0], [2.0, 51.0]]]] } }
      ]
    }"#;

    #[test]
    fn a_point_is_found_in_its_ward_and_outside_every_ward_in_none() {
        let set = BoundarySet::parse(TWO_WARDS).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.coordinates(), Coordinates::LonLat);
        let w = set.locate(1.5, 51.5).unwrap();
        assert_eq!(
            (w.ward.as_str(), w.borough.as_deref(), w.beat.as_deref()),
            ("Westgate", Some("Canterbury"), Some("C3"))
        );
        assert_eq!(set.locate(2.9, 51.1).unwrap().ward, "Northgate");
        // Inside Northgate's bounding box but outside its triangle.
        assert_eq!(set.locate(2.1, 51.9), None);
        assert_eq!(set.locate(-1.0, 51.5), None);
    }

    #[test]
    fn malformed_sets_list_every_problem_with_its_path() {
        let problems = BoundarySet::parse("{ not json").unwrap_err();
        assert!(
            problems[0].message.starts_with("not GeoJSON"),
            "{problems:?}"
        );
        let problems =
            BoundarySet::parse(r#"{"type":"Point","coordinates":[1.0,2.0]}"#).unwrap_err();
        assert_eq!(problems[0].path, "type");
        let bad = r#"{
          "type": "FeatureCollection", "casebook:coordinates": "mercator",
          "features": [
            { "type": "Feature", "properties": { "borough": 3 },
              "geometry": { "type": "Point", "coordinates": [1.0, 2.0] } },
            { "type": "Feature", "properties": { "ward": "A" }, "geometry": null }
          ]
        }"#;
        let paths: Vec<String> = BoundarySet::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "casebook:coordinates",
                "features[0].properties.ward",
                "features[0].properties.borough",
                "features[0].geometry",
                "features[1].geometry",
            ]
        );
    }
}
