//! `keypal completions`: shell completion scripts.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::{CmdResult, Status};
use crate::io::Out;

/// Arguments of `keypal completions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    keypal completions bash > ~/.local/share/bash-completion/completions/keypal\n  \
    keypal completions zsh > \"${fpath[1]}/_keypal\"\n  \
    keypal completions fish > ~/.config/fish/completions/keypal.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

/// Runs `keypal completions`.
pub fn run(args: &CompletionsArgs) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "keypal", &mut script);
    let mut out = Out::new();
    out.raw(&script)?;
    out.finish()?;
    Ok(Status::Success)
}
