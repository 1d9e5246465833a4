//! Request and response bodies exactly as the RFCs spell their fields.

use serde::{Deserialize, Serialize};

/// RFC 6749 §5.1 successful token response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

impl TokenResponse {
    /// A Bearer token (RFC 6750) that lives `expires_in` seconds.
    pub fn bearer(
        access_token: String,
        expires_in: u64,
        refresh_token: Option<String>,
        scope: String,
    ) -> Self {
        Self {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token,
            scope,
        }
    }
}

/// RFC 7591 §2 client metadata of a registration (and RFC 7592 §2.2's `client_id` and
/// `client_secret` of an update). Members the server does not know are ignored (§2).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientMetadataRequest {
    pub redirect_uris: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// RFC 7591 §3.2.1 client information response, with RFC 7592 §3's
/// `registration_access_token` and `registration_client_uri`.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInformationResponse {
    pub client_id: String,
    /// Only in the answer that creates the secret: it is stored as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    pub registration_access_token: String,
    pub registration_client_uri: String,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// RFC 6749 §5.2 error response.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
}

/// RFC 7662 §2.2 introspection response. Inactive tokens carry `active: false` only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// The body of WSO2 API Manager's `POST /client-registration/v0.17/register`, as its scripts
/// send it. Other members (`tokenScope`, …) are ignored, as that product ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wso2RegistrationRequest {
    pub callback_url: Option<String>,
    pub client_name: Option<String>,
    pub owner: Option<String>,
    /// Grant type names, space-separated.
    pub grant_type: Option<String>,
    pub saas_app: Option<bool>,
}

/// That endpoint's answer, with the product's member names and order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wso2RegistrationResponse {
    pub client_id: String,
    pub client_name: String,
    #[serde(rename = "callBackURL")]
    pub call_back_url: Option<String>,
    pub client_secret: String,
    pub is_saas_application: bool,
    pub app_owner: String,
    /// JSON as a string: [`Wso2JsonString`].
    pub json_string: String,
    /// The product's application attributes; none here.
    pub json_app_attribute: &'static str,
    pub token_type: Option<&'static str>,
}

/// What `jsonString` holds: the registration as the product's OAuth layer saw it, every
/// value a string (grant types space-separated).
#[derive(Debug, Clone, Serialize)]
pub struct Wso2JsonString<'a> {
    pub grant_types: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uris: Option<&'a str>,
    pub client_name: &'a str,
}
