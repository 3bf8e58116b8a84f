//! What an application call can end in besides success: a refusal the caller acts on, or a failure of the
//! store. Each front end converts this one type, in one place (`gateway::errors`, `admin::error`).

use crate::domain::Refusal;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Refused for a reason the caller can act on; nothing was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed (busy, unavailable, shutting down); the caller may retry.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Refused(refusal) => AppError::Refused(refusal),
            other => AppError::Store(other),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
