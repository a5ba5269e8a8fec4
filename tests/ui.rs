//! The dashboard driven for real: key sequences against a real engine on a temp folder.
