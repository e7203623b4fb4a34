//! One module per subcommand, each with its clap arguments and a `run` function.

pub mod apps;
pub mod completions;
pub mod config;
pub mod dump;
pub mod generate;
pub mod hash;
pub mod inspect;
pub mod key_files;
pub mod keys;
pub mod serve;
pub mod tokens;
pub mod verify;
