//! Drafts, attachments and sending a draft: not served yet (the next slice).

use axum::response::Response;

use super::{GraphError, mail::MailRequest, messages::Row};

fn not_yet() -> GraphError {
    super::method_not_allowed_error()
}

pub(crate) fn create(_request: &MailRequest<'_>) -> Result<(Response, Vec<String>), GraphError> {
    Err(not_yet())
}

pub(crate) fn send(_request: &MailRequest<'_>, _row: &Row) -> Result<Response, GraphError> {
    Err(not_yet())
}

pub(crate) fn add_attachment(
    _request: &MailRequest<'_>,
    _row: &Row,
) -> Result<Response, GraphError> {
    Err(not_yet())
}

pub(crate) fn create_upload_session(
    _request: &MailRequest<'_>,
    _row: &Row,
) -> Result<Response, GraphError> {
    Err(not_yet())
}
