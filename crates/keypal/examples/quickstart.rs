//! The quickstart: configure a manager once, create a key, verify it, revoke it.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use keypal::{Code, KeyManager, MemoryStore, NewKey, VerifyOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), keypal::Error> {
    let keys = KeyManager::builder().prefix("sk_live").length(32).store(MemoryStore::new()).build()?;

    let created = keys
        .create(
            NewKey::new()
                .owner_id("user_123")
                .name("quickstart")
                .scopes(["read", "write"])
                .expires_in(Duration::from_secs(3600)),
        )
        .await?;
    // The plaintext is shown once; keypal stores only its hash.
    println!("created key {} for {}", created.record.masked(), created.record.owner_id.as_deref().unwrap_or("-"));
    println!("  id:   {}", created.record.id);
    println!("  hash: {}", created.record.hash);

    let presented = created.key.expose();
    let v = keys.verify(presented).await?;
    println!("verify                 -> {}", v.code());
    let v = keys.verify_with(presented, &VerifyOptions::new().scopes(["admin"])).await?;
    println!("verify (needs admin)   -> {}", v.code());
    println!("verify (typo)          -> {}", keys.verify("sk_live_not-a-key").await?.code());

    keys.revoke(&created.record.id).await?;
    let v = keys.verify(presented).await?;
    println!("verify after revoke    -> {}", v.code());
    assert_eq!(v.code(), Code::Revoked);
    Ok(())
}
