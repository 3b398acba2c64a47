//! The fake's routing table: which Backend API endpoint a `method path` addresses, the route
//! template it is counted under in [`FakeStats::route_requests`](super::FakeStats), and the
//! per-endpoint limit ("system limit") it is subject to, with the key that limit counts by.

use axum::http::Method;

use super::LimitedEndpoint;

/// The endpoint a request addresses.
#[derive(Debug, PartialEq)]
pub(super) enum Route {
    /// `GET /v1/users`.
    List,
    /// `GET /v1/users/count`.
    Count,
    /// `GET /v1/users/{user_id}`.
    Get(String),
    /// `PATCH /v1/users/{user_id}`.
    UpdateUser(String),
    /// `PATCH /v1/users/{user_id}/metadata`: deep merge.
    MergeUserMetadata(String),
    /// `PUT /v1/users/{user_id}/metadata`: replace each field given.
    ReplaceUserMetadata(String),
    /// `GET /v1/organizations/{organization_id}` (an id or a slug).
    GetOrganization(String),
    /// `PATCH /v1/organizations/{organization_id}`.
    UpdateOrganization(String),
    /// `PATCH /v1/organizations/{organization_id}/metadata`: deep merge.
    MergeOrganizationMetadata(String),
    /// `PUT /v1/organizations/{organization_id}/metadata`: replace each field given.
    ReplaceOrganizationMetadata(String),
    /// `GET /v1/organizations/{organization_id}/memberships`.
    ListMemberships(String),
    /// `POST /v1/invitations`.
    CreateInvitation,
    /// `GET /v1/jwks`.
    Jwks,
    /// Anything else.
    Unknown,
}

impl Route {
    /// Routes `method path`.
    pub(super) fn of(method: &Method, path: &str) -> Self {
        let Some(rest) = path.trim_end_matches('/').strip_prefix("/v1/") else {
            return Self::Unknown;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return Self::Unknown;
        }
        let id = |at: usize| segments[at].to_owned();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["users"]) => Self::List,
            ("GET", ["users", "count"]) => Self::Count,
            ("GET", ["users", _]) => Self::Get(id(1)),
            ("PATCH", ["users", _]) => Self::UpdateUser(id(1)),
            ("PATCH", ["users", _, "metadata"]) => Self::MergeUserMetadata(id(1)),
            ("PUT", ["users", _, "metadata"]) => Self::ReplaceUserMetadata(id(1)),
            ("GET", ["organizations", _]) => Self::GetOrganization(id(1)),
            ("PATCH", ["organizations", _]) => Self::UpdateOrganization(id(1)),
            ("PATCH", ["organizations", _, "metadata"]) => Self::MergeOrganizationMetadata(id(1)),
            ("PUT", ["organizations", _, "metadata"]) => Self::ReplaceOrganizationMetadata(id(1)),
            ("GET", ["organizations", _, "memberships"]) => Self::ListMemberships(id(1)),
            ("POST", ["invitations"]) => Self::CreateInvitation,
            ("GET", ["jwks"]) => Self::Jwks,
            _ => Self::Unknown,
        }
    }

    /// The route template counted in `FakeStats::route_requests`, as Clerk documents it.
    pub(super) fn template(&self) -> &'static str {
        match self {
            Self::List => "GET /v1/users",
            Self::Count => "GET /v1/users/count",
            Self::Get(_) => "GET /v1/users/{user_id}",
            Self::UpdateUser(_) => "PATCH /v1/users/{user_id}",
            Self::MergeUserMetadata(_) => "PATCH /v1/users/{user_id}/metadata",
            Self::ReplaceUserMetadata(_) => "PUT /v1/users/{user_id}/metadata",
            Self::GetOrganization(_) => "GET /v1/organizations/{organization_id}",
            Self::UpdateOrganization(_) => "PATCH /v1/organizations/{organization_id}",
            Self::MergeOrganizationMetadata(_) => {
                "PATCH /v1/organizations/{organization_id}/metadata"
            }
            Self::ReplaceOrganizationMetadata(_) => {
                "PUT /v1/organizations/{organization_id}/metadata"
            }
            Self::ListMemberships(_) => "GET /v1/organizations/{organization_id}/memberships",
            Self::CreateInvitation => "POST /v1/invitations",
            Self::Jwks => "GET /v1/jwks",
            Self::Unknown => "other",
        }
    }

    /// Whether the instance-wide rate limit counts this request: every endpoint but the JWKS.
    pub(super) fn counts_in_instance_budget(&self) -> bool {
        *self != Self::Jwks
    }

    /// The per-endpoint limit this request is subject to, and the key it counts under (the
    /// user or organization id from the path; one key for the whole instance otherwise).
    pub(super) fn endpoint_limit(&self) -> Option<(LimitedEndpoint, &str)> {
        match self {
            Self::UpdateUser(id) => Some((LimitedEndpoint::UserUpdate, id)),
            Self::MergeUserMetadata(id) | Self::ReplaceUserMetadata(id) => {
                Some((LimitedEndpoint::UserMetadata, id))
            }
            Self::UpdateOrganization(id) => Some((LimitedEndpoint::OrganizationUpdate, id)),
            Self::MergeOrganizationMetadata(id) | Self::ReplaceOrganizationMetadata(id) => {
                Some((LimitedEndpoint::OrganizationMetadata, id))
            }
            Self::CreateInvitation => Some((LimitedEndpoint::InvitationCreate, "")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        let cases = [
            (Method::GET, "/v1/users", Route::List),
            (Method::GET, "/v1/users/", Route::List),
            (Method::GET, "/v1/users/count", Route::Count),
            (Method::GET, "/v1/users/user_1", Route::Get("user_1".into())),
            (
                Method::PATCH,
                "/v1/users/user_1",
                Route::UpdateUser("user_1".into()),
            ),
            (
                Method::PATCH,
                "/v1/users/user_1/metadata",
                Route::MergeUserMetadata("user_1".into()),
            ),
            (
                Method::PUT,
                "/v1/users/user_1/metadata",
                Route::ReplaceUserMetadata("user_1".into()),
            ),
            (
                Method::GET,
                "/v1/organizations/acme",
                Route::GetOrganization("acme".into()),
            ),
            (
                Method::GET,
                "/v1/organizations/org_1/memberships",
                Route::ListMemberships("org_1".into()),
            ),
            (Method::POST, "/v1/invitations", Route::CreateInvitation),
            (Method::GET, "/v1/jwks", Route::Jwks),
            (Method::POST, "/v1/users/user_1", Route::Unknown),
            (Method::GET, "/v1/users//metadata", Route::Unknown),
            (Method::GET, "/v2/users", Route::Unknown),
            (Method::DELETE, "/v1/organizations/org_1", Route::Unknown),
            (Method::GET, "/v1/users/user_1/metadata", Route::Unknown),
        ];
        for (method, path, route) in cases {
            assert_eq!(Route::of(&method, path), route, "{method} {path}");
        }
    }

    #[test]
    fn only_writes_and_invitations_have_endpoint_limits_and_jwks_is_free() {
        assert_eq!(
            Route::ReplaceUserMetadata("u".into()).endpoint_limit(),
            Some((LimitedEndpoint::UserMetadata, "u"))
        );
        assert_eq!(
            Route::CreateInvitation.endpoint_limit(),
            Some((LimitedEndpoint::InvitationCreate, ""))
        );
        assert_eq!(Route::Get("u".into()).endpoint_limit(), None);
        assert!(!Route::Jwks.counts_in_instance_budget());
        assert!(Route::List.counts_in_instance_budget());
    }
}
