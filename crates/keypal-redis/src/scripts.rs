//! The Lua scripts, each with the shared prelude (`scripts/prelude.lua`) in front.
//!
//! `redis::Script` sends `EVALSHA` and loads the script on `NOSCRIPT`, so a Redis
//! restart or `SCRIPT FLUSH` costs one extra round trip, nothing more.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("scripts/prelude.lua"), include_str!(concat!("scripts/", $file))))
    };
}

/// Every script the store runs.
pub(crate) struct Scripts {
    pub(crate) insert: Script,
    pub(crate) find: Script,
    pub(crate) find_by_hint: Script,
    pub(crate) list: Script,
    pub(crate) count: Script,
    pub(crate) update: Script,
    pub(crate) set_enabled: Script,
    pub(crate) revoke: Script,
    pub(crate) revoke_owner: Script,
    pub(crate) rotate: Script,
    pub(crate) delete: Script,
    pub(crate) consume: Script,
    pub(crate) set_credits: Script,
    pub(crate) touch: Script,
    pub(crate) replace_hash: Script,
    pub(crate) audit: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    insert: script!("insert.lua"),
    find: script!("find.lua"),
    find_by_hint: script!("find_by_hint.lua"),
    list: script!("list.lua"),
    count: script!("count.lua"),
    update: script!("update.lua"),
    set_enabled: script!("set_enabled.lua"),
    revoke: script!("revoke.lua"),
    revoke_owner: script!("revoke_owner.lua"),
    rotate: script!("rotate.lua"),
    delete: script!("delete.lua"),
    consume: script!("consume.lua"),
    set_credits: script!("set_credits.lua"),
    touch: script!("touch.lua"),
    replace_hash: script!("replace_hash.lua"),
    audit: script!("audit.lua"),
});
