//! The OpenAPI document (`GET /openapi.json`), generated from the handlers and types.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, apps, keys, owners, verify};

/// keypal's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "keypal", description = "API keys for services in any language: applications, keys, client secrets and verification."),
    paths(
        crate::routes::healthz, crate::routes::ready::readyz, crate::routes::metrics, crate::routes::openapi,
        admin::login, admin::logout, admin::service_key, admin::rotate_service_key, admin::audit,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::regenerate_secret,
        apps::create_key, apps::list_keys,
        keys::get, keys::update, keys::rotate, keys::revoke, keys::delete, keys::reveal,
        verify::verify,
        owners::create, owners::list, owners::revoke,
    ),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// Declares the two bearer schemes: the service key and a client secret.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("service_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("client_secret", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}
