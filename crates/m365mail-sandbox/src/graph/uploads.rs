//! Attachment upload sessions: not served yet (the next slice).

use super::GraphError;

/// Where upload URLs point.
pub(crate) const UPLOAD_ROUTE: &str = "/_sandbox/outlook/api/v2.0/{*rest}";

/// Whether a path is an upload URL's.
pub(crate) fn is_upload_path(path: &str) -> bool {
    path.starts_with("/_sandbox/outlook/")
}

pub(crate) async fn put_chunk() -> GraphError {
    super::method_not_allowed_error()
}

pub(crate) async fn other_method() -> GraphError {
    super::method_not_allowed_error()
}
