//! Scope matching.
//!
//! A key holds a list of granted scopes; a request may require some. Every required
//! scope must be granted by at least one granted scope, where a granted scope
//!
//! - equal to the required one grants it (`read` grants `read`);
//! - `*` grants everything;
//! - `resource:*` grants every scope that starts with `resource:` (`billing:*`
//!   grants `billing:read` and `billing:invoices:write`, but not `billing`).
//!
//! Matching is case-sensitive. A required scope is never a pattern: requiring
//! `billing:*` is satisfied only by a granted `billing:*` or `*`.

/// Whether `granted` grants the single scope `required`.
///
/// ```
/// use keypal::scope::grants;
/// assert!(grants("read", "read"));
/// assert!(grants("*", "anything:at:all"));
/// assert!(grants("billing:*", "billing:read"));
/// assert!(!grants("billing:*", "billing"));
/// assert!(!grants("read", "write"));
/// ```
pub fn grants(granted: &str, required: &str) -> bool {
    if granted == required || granted == "*" {
        return true;
    }
    match granted.strip_suffix('*') {
        Some(stem) if stem.ends_with(':') => required.len() > stem.len() && required.starts_with(stem),
        _ => false,
    }
}

/// Whether the `granted` list grants every scope of `required`.
///
/// ```
/// use keypal::scope::grants_all;
/// let granted = vec!["read".to_string(), "billing:*".to_string()];
/// assert!(grants_all(&granted, &["read", "billing:write"]));
/// assert!(!grants_all(&granted, &["write"]));
/// assert!(grants_all(&granted, &[] as &[&str]));
/// ```
pub fn grants_all<R: AsRef<str>>(granted: &[String], required: &[R]) -> bool {
    required.iter().all(|need| granted.iter().any(|have| grants(have, need.as_ref())))
}

/// Checks that a scope is well formed: 1 to 128 characters, no whitespace or
/// control characters, and `*` only as the whole scope or as a final `:*`.
///
/// ```
/// use keypal::scope::validate;
/// assert!(validate("billing:read").is_ok());
/// assert!(validate("billing:*").is_ok());
/// assert!(validate("*").is_ok());
/// assert!(validate("bil*ing").is_err());
/// assert!(validate("has space").is_err());
/// assert!(validate(&"é".repeat(128)).is_ok(), "characters are counted, not bytes");
/// assert!(validate(&"é".repeat(129)).is_err());
/// ```
pub fn validate(scope: &str) -> Result<(), &'static str> {
    if scope.is_empty() || scope.chars().count() > 128 {
        return Err("a scope is 1 to 128 characters");
    }
    if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a scope has no whitespace or control characters");
    }
    let stars = scope.matches('*').count();
    let well_placed = scope == "*" || (stars == 1 && scope.ends_with(":*"));
    if stars > 0 && !well_placed {
        return Err("`*` stands alone or ends a scope as `:*`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_needs_the_colon_boundary() {
        assert!(!grants("bill:*", "billing:read"));
        assert!(grants("a:*", "a:b:c"));
        assert!(!grants("a:*", "a:"));
        assert!(!grants("read", "*"));
    }
}
