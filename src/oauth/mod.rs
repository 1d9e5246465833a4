//! The protocol layer: RFC 6749 (and friends) without any HTTP framework or database types.
//! `http/` turns requests into calls here; `store/` is reached only through its traits.

pub mod authorize;
pub mod client_auth;
pub mod error;
pub mod grants;
pub mod introspection;
pub mod issue;
pub mod login_session;
pub mod lookup;
pub mod params;
pub mod pkce;
pub mod portal;
pub mod registration;
pub mod revocation;
pub mod scope;
pub mod token;
pub mod wire;
pub mod wso2_registration;

pub use error::{ErrorCode, OAuthError};
pub use token::{TokenRequest, TokenService};
