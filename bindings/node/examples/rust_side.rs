//! A Rust service on the database a Node service uses: the other side of
//! `test/shared.test.mjs`, which checks that keys created by one verify in the other.
//!
//! ```text
//! rust_side create DATABASE_URL          prints a new key (owner `rust`, scope `read`)
//! rust_side verify DATABASE_URL KEY      prints the verification's code and owner
//! ```
//! Both sides configure the manager alike: prefix `sk_shared`, SHA-256.

use keypal::{KeyManager, NewKey};
use keypal_sql::SqlStore;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (command, url) = match (args.get(1), args.get(2)) {
            (Some(command), Some(url)) => (command.as_str(), url.as_str()),
            _ => return Err("usage: rust_side create|verify DATABASE_URL [KEY]".into()),
        };
        let store = SqlStore::connect(url).await?;
        let keys = KeyManager::builder().prefix("sk_shared").store(store).build()?;
        match (command, args.get(3)) {
            ("create", None) => {
                let created = keys.create(NewKey::new().owner_id("rust").scopes(["read"])).await?;
                println!("{}", created.key.expose());
            }
            ("verify", Some(key)) => {
                let verification = keys.verify(key).await?;
                let owner = verification.record().and_then(|r| r.owner_id.clone()).unwrap_or_default();
                println!("{} {owner}", verification.code());
            }
            _ => return Err("usage: rust_side create|verify DATABASE_URL [KEY]".into()),
        }
        keys.flush_last_used().await?;
        Ok(())
    })
}
