//! WSO2 API Manager's client registration, `POST /client-registration/v0.17/register`, for
//! scripts written against the product tokengate replaces (`[registration] wso2_compat`).
//!
//! Not RFC 7591: the caller authenticates with a user's own name and password (HTTP Basic),
//! the body is `{callbackUrl, clientName, owner, grantType, saasApp}` and the answer
//! `{clientId, clientName, callBackURL, clientSecret, isSaasApplication, appOwner, jsonString,
//! …}`. The user must be a `developer` or an `admin`; the client is a confidential one with a
//! generated secret (shown once), owned by the user, and goes through the RFC 7591 policy,
//! client rules and store path (`RegistrationService::register_owned`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::SecretString;

use super::error::{ErrorCode, OAuthError};
use super::grants::password::{check_login, LoginChannel};
use super::registration::{OwnedRegistration, RegistrationService};
use super::token::TokenService;
use super::wire::{
    ClientMetadataRequest, Wso2JsonString, Wso2RegistrationRequest, Wso2RegistrationResponse,
};
use crate::audit::Origin;
use crate::metrics::ClientChangeVia;
use crate::store::model::{GrantType, Role};

/// The audit trail's `mode` of these registrations (`client_registered`).
pub const AUDIT_MODE: &str = "wso2_compat";

/// A user name and password from `Authorization: Basic` (RFC 7617: `base64(name:password)`,
/// the password being everything after the first colon; not form-encoded, unlike a client's).
pub fn basic_credentials(header: Option<&[u8]>) -> Result<(String, SecretString), OAuthError> {
    let refused =
        |description: &'static str| OAuthError::new(ErrorCode::InvalidClient, description);
    let header = header.ok_or_else(|| {
        refused("HTTP Basic authentication with a user's name and password is required")
    })?;
    let value = std::str::from_utf8(header)
        .map_err(|_| refused("the Authorization header is not UTF-8"))?
        .trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused("expected Authorization: Basic"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| refused("the Basic credentials are not base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| refused("the Basic credentials are not UTF-8"))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| refused("the Basic credentials have no colon"))?;
    if name.is_empty() {
        return Err(refused("the Basic credentials have no user name"));
    }
    Ok((name.to_owned(), SecretString::from(password.to_owned())))
}

fn invalid_metadata(description: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

fn forbidden(description: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::AccessDenied, description)
}

/// Parses the JSON body.
pub fn parse_request(body: &[u8]) -> Result<Wso2RegistrationRequest, OAuthError> {
    serde_json::from_slice(body)
        .map_err(|err| invalid_metadata(format!("the body is not a registration request: {err}")))
}

/// The request as RFC 7591 metadata for the shared policy: `grantType` split on spaces,
/// `callbackUrl` the redirect URI only with the code grant (the product's scripts send
/// `www.google.lk` for clients that never redirect), always `client_secret_basic`.
fn as_metadata(request: &Wso2RegistrationRequest) -> Result<ClientMetadataRequest, OAuthError> {
    let client_name = request
        .client_name
        .clone()
        .ok_or_else(|| invalid_metadata("clientName is required"))?;
    let grant_types: Vec<String> = request
        .grant_type
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if grant_types.is_empty() {
        return Err(invalid_metadata(
            "grantType must name at least one grant type",
        ));
    }
    let code_flow = grant_types
        .iter()
        .any(|name| name == GrantType::AuthorizationCode.as_str());
    let redirect_uris = code_flow.then(|| request.callback_url.clone().into_iter().collect());
    Ok(ClientMetadataRequest {
        redirect_uris,
        token_endpoint_auth_method: Some("client_secret_basic".to_owned()),
        response_types: code_flow.then(|| vec!["code".to_owned()]),
        grant_types: Some(grant_types),
        client_name: Some(client_name),
        ..ClientMetadataRequest::default()
    })
}

/// Registers the client the request describes for the user of `authorization`. The password
/// is checked as on the login page (the lockout, the hashing pool, `login_failed`): anyone can
/// send this request, no client secret comes with it, so its guesses count as the page's and
/// cannot lock the name for the password grant's apps.
pub async fn register(
    service: &TokenService,
    registration: &RegistrationService,
    authorization: Option<&[u8]>,
    body: &[u8],
    origin: &Origin,
) -> Result<Wso2RegistrationResponse, OAuthError> {
    // Who asks comes first: strangers learn nothing of the policy from its refusals.
    let (username, password) = basic_credentials(authorization)?;
    // No client is involved: `login_failed` names none.
    let checked = check_login(
        service,
        "",
        origin,
        &username,
        password,
        LoginChannel::LoginPage { known_device: None },
    )
    .await?;
    let invalid_credentials =
        || OAuthError::new(ErrorCode::InvalidClient, "invalid username or password");
    if !checked {
        return Err(invalid_credentials());
    }
    let user = service
        .users
        .find_user(&username)
        .await?
        .ok_or_else(invalid_credentials)?;
    let admin = user.roles.contains(&Role::Admin);
    if !admin && !user.roles.contains(&Role::Developer) {
        return Err(forbidden(
            "registering applications needs the developer or admin role",
        ));
    }
    let request = parse_request(body)?;
    let metadata = as_metadata(&request)?;
    // The product registers for `owner`; a developer only for themselves, an admin for anyone.
    let owner = match request.owner.as_deref() {
        None => user.name.clone(),
        Some(owner) if owner == user.name => user.name.clone(),
        Some(_) if !admin => {
            return Err(forbidden("owner must be the authenticated user"));
        }
        Some(owner) => match service.users.find_user(owner).await? {
            Some(named) if !named.disabled => named.name,
            _ => return Err(invalid_metadata("owner is not a known user")),
        },
    };
    let (client, client_secret) = registration
        .register_owned(
            &metadata,
            &owner,
            OwnedRegistration {
                policy: registration.registration_policy(),
                audit_mode: AUDIT_MODE,
                via: ClientChangeVia::Wso2,
                public_allowed: false,
            },
            origin,
        )
        .await?;
    let client_name = client.name.clone().unwrap_or_default();
    // As asked, in the order asked (the product echoes them so); every one was allowed.
    let mut grant_types: Vec<&str> = Vec::new();
    for name in metadata.grant_types.iter().flatten() {
        if !grant_types.contains(&name.as_str()) {
            grant_types.push(name);
        }
    }
    let grant_types = grant_types.join(" ");
    let json_string = serde_json::to_string(&Wso2JsonString {
        grant_types,
        redirect_uris: request.callback_url.as_deref(),
        client_name: &client_name,
    })
    .map_err(OAuthError::server_error)?;
    Ok(Wso2RegistrationResponse {
        client_id: client.id,
        client_name,
        call_back_url: request.callback_url,
        // Always one: only confidential clients are registered here.
        client_secret: client_secret.unwrap_or_default(),
        // Echoed as sent: tokengate has no tenants to share an app across.
        is_saas_application: request.saas_app.unwrap_or(false),
        app_owner: owner,
        json_string,
        json_app_attribute: "{}",
        token_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    fn basic(raw: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(raw)).into_bytes()
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon_without_form_decoding() {
        let (name, password) = basic_credentials(Some(&basic("dev:p%41ss:w+rd"))).unwrap();
        assert_eq!(name, "dev");
        assert_eq!(password.expose_secret(), "p%41ss:w+rd");
        for bad in [
            None,
            Some(b"Bearer abc".to_vec()),
            Some(b"Basic !!!".to_vec()),
            Some(basic("no-colon")),
            Some(basic(":password")),
        ] {
            let err = basic_credentials(bad.as_deref()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClient);
        }
    }

    #[test]
    fn the_callback_is_a_redirect_uri_only_with_the_code_grant() {
        let request = parse_request(
            br#"{"callbackUrl":"www.google.lk","clientName":"c","owner":"admin",
                 "grantType":"client_credentials password refresh_token","saasApp":true,
                 "tokenScope":"Production"}"#,
        )
        .unwrap();
        let metadata = as_metadata(&request).unwrap();
        assert_eq!(metadata.redirect_uris, None);
        assert_eq!(
            metadata.grant_types.unwrap(),
            ["client_credentials", "password", "refresh_token"]
        );
        let request = Wso2RegistrationRequest {
            grant_type: Some("authorization_code".into()),
            callback_url: Some("https://app.example/cb".into()),
            client_name: Some("c".into()),
            ..Default::default()
        };
        let metadata = as_metadata(&request).unwrap();
        assert_eq!(metadata.redirect_uris.unwrap(), ["https://app.example/cb"]);
        assert_eq!(metadata.response_types.unwrap(), ["code"]);
    }

    #[test]
    fn a_name_and_a_grant_type_are_required() {
        for json in [
            r#"{"grantType":"client_credentials"}"#,
            r#"{"clientName":"c"}"#,
            r#"{"clientName":"c","grantType":"  "}"#,
        ] {
            let err = as_metadata(&parse_request(json.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{json}");
        }
        assert_eq!(
            parse_request(b"[]").unwrap_err().code,
            ErrorCode::InvalidClientMetadata
        );
    }
}
