//! Platform layer (filled by the platform issue).
