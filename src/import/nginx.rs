//! nginx's `nginx.conf`.
use super::emit::Plan;
use super::ImportError;
use std::path::Path;

pub(super) fn import(_path: &Path) -> Result<Plan, ImportError> {
    Ok(Plan::default())
}
