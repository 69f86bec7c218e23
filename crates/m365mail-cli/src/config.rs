//! TOML config file with named profiles. (Owned by the auth/CLI work; placeholder.)
