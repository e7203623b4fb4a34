//! Inserting records and finding them again: by id, by unique lookup (id segment or
//! digest), by hint; records read back equal, field for field; unique lookups and
//! record ids are unique.

use keypal::{Action, AuditQuery, Insertion, KeyId, KeyRecord, Lookup, Store, StoreError};
use serde_json::{Value, json};

use crate::fixtures::{
    audit_all, audit_len, digest_for, event, fetch, full_record, id_lookup_for, insert, now, record, record_for,
    record_in, record_with_hint, record_with_lookup, shift, sorted_ids,
};

/// `insert` returns the record as given, and `get` and `find` read it back equal,
/// every field included: a record with every field set, and a bare one (empty
/// display parts and scopes, every optional field `None`).
pub async fn insert_returns_the_record_and_get_reads_it_back_equal<S: Store>(store: S) {
    let id = KeyId::new();
    let bare = KeyRecord::new(id, digest_for(id), "$sha256$bare", now());
    for record in [full_record(), bare] {
        let inserted = store.insert(record.clone(), Some(10), event(Action::Created)).await.expect("insert failed");
        assert_eq!(*inserted, record, "insert must return the record as given");
        assert_eq!(*fetch(&store, record.id).await, record, "get must read the record back equal");
        let found = store.find(&record.lookup).await.expect("find failed");
        assert_eq!(found.as_deref(), Some(&record), "find by its lookup must read the record back equal");
    }
}

/// `find` with a `Lookup::Id` returns the record with that id segment, and only it.
pub async fn find_by_id_lookup_returns_the_record<S: Store>(store: S) {
    let a = record_with_lookup(Lookup::Id("abc123def456".to_owned()));
    let b = record_with_lookup(Lookup::Id("abc123def457".to_owned()));
    insert(&store, a.clone()).await;
    insert(&store, b.clone()).await;
    let found = store.find(&Lookup::Id("abc123def456".to_owned())).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&a), "find(Id) must return the record with that id segment");
    let found = store.find(&Lookup::Id("abc123def457".to_owned())).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&b), "find(Id) must return the record with that id segment");
    let missing = store.find(&Lookup::Id("abc123def45".to_owned())).await.expect("find failed");
    assert!(missing.is_none(), "find(Id) of a prefix of a stored id must find nothing, got {missing:?}");
}

/// `find` with a `Lookup::Digest` returns the record with that digest, and only it.
pub async fn find_by_digest_lookup_returns_the_record<S: Store>(store: S) {
    let a = record();
    let b = record();
    assert!(matches!(a.lookup, Lookup::Digest(_)), "fixture records use digest lookups");
    insert(&store, a.clone()).await;
    insert(&store, b.clone()).await;
    let found = store.find(&a.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&a), "find(Digest) must return the record with that digest");
    let found = store.find(&b.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&b), "find(Digest) must return the record with that digest");
    let missing = store.find(&Lookup::Digest([0x42; 32])).await.expect("find failed");
    assert!(missing.is_none(), "find(Digest) of an unknown digest must find nothing, got {missing:?}");
}

/// `find_by_hint` returns every record sharing the hint, across namespaces and owners,
/// and no record of another hint.
pub async fn find_by_hint_returns_every_candidate<S: Store>(store: S) {
    let hint = "brdnv_sk_a7b";
    let mut a = record_with_hint(hint);
    a.owner_id = Some("user_1".to_owned());
    let mut b = record_with_hint(hint);
    b.owner_id = Some("user_2".to_owned());
    b.namespace = Some("app_1".to_owned());
    let mut c = record_with_hint(hint);
    c.namespace = Some("app_2".to_owned());
    let other = record_with_hint("brdnv_sk_a7c");
    let prefix = record_with_hint("brdnv_sk_a7");
    for r in [&a, &b, &c, &other, &prefix] {
        insert(&store, r.clone()).await;
    }

    let found = store.find_by_hint(hint).await.expect("find_by_hint failed");
    let mut expected = vec![a.id, b.id, c.id];
    expected.sort();
    assert_eq!(sorted_ids(&found), expected, "find_by_hint must return exactly the records with that hint");
    for r in [&a, &b, &c] {
        let got = found.iter().find(|f| f.id == r.id).expect("candidate missing");
        assert_eq!(**got, *r, "a hint candidate must read back equal");
    }
    let none = store.find_by_hint("brdnv_sk_zzz").await.expect("find_by_hint failed");
    assert!(none.is_empty(), "find_by_hint of an unknown hint must be empty, got {none:?}");
    let found = store.find_by_hint("brdnv_sk_a7").await.expect("find_by_hint failed");
    assert_eq!(sorted_ids(&found), vec![prefix.id], "a hint matches exactly, not as a prefix");
}

/// `get` of an unknown id, `find` of unknown lookups and `find_by_hint` of an unknown
/// hint find nothing, in an empty store and in a populated one.
pub async fn unknown_id_and_lookups_find_nothing<S: Store>(store: S) {
    for _ in 0..2 {
        assert!(store.get(KeyId::new()).await.expect("get failed").is_none(), "get of an unknown id must be None");
        let id = KeyId::new();
        for lookup in [digest_for(id), id_lookup_for(id)] {
            let found = store.find(&lookup).await.expect("find failed");
            assert!(found.is_none(), "find of an unknown {lookup:?} must be None, got {found:?}");
        }
        let hinted = store.find_by_hint("nothing_here").await.expect("find_by_hint failed");
        assert!(hinted.is_empty(), "find_by_hint of an unknown hint must be empty");
        insert(&store, record()).await;
        insert(&store, record_with_hint("something")).await;
    }
}

/// Metadata round-trips whatever its JSON kind: a plain string (not re-parsed as
/// JSON, even when it looks like JSON), an object, an array, a number, a boolean.
pub async fn metadata_of_any_json_kind_round_trips<S: Store>(store: S) {
    let values: Vec<Value> = vec![
        json!("plain text"),
        json!("{\"looks\": \"like json\"}"),
        json!("with \"quotes\", a\nnewline, a\ttab, a \\ backslash and ü 🚀"),
        json!(""),
        json!("123"),
        json!("null"),
        json!({"team": "infra", "tags": ["a", "b"], "limits": {"daily": 100}}),
        json!({}),
        json!([1, "two", {"three": 3.5}, null, false]),
        json!([]),
        json!(42),
        json!(-7.25),
        json!(true),
    ];
    let mut stored = Vec::new();
    for value in values {
        let mut r = record();
        r.metadata = Some(value);
        insert(&store, r.clone()).await;
        stored.push(r);
    }
    let mut none = record();
    none.metadata = None;
    insert(&store, none.clone()).await;
    stored.push(none);
    for r in stored {
        let back = fetch(&store, r.id).await;
        assert_eq!(back.metadata, r.metadata, "metadata must round-trip unchanged");
        assert_eq!(*back, r, "a record with metadata {:?} must read back equal", r.metadata);
    }
}

/// Owner ids, namespaces, names, tiers, scopes and display parts are stored as the
/// exact strings given: unicode, quotes, newlines, percent signs, SQL wildcards.
pub async fn unicode_and_special_characters_round_trip<S: Store>(store: S) {
    let owners = ["用户_ü_🚀", "o'brien", "a\"b", "line\nbreak", "100%_like*", "  spaced  ", "back\\slash"];
    for owner in owners {
        let mut r = record_in(Some("app/ñ:ß 'x'"), owner);
        r.name = Some(format!("name of {owner} — \"quoted\"\r\n\ttabbed"));
        r.tier = Some("entplus-ü".to_owned());
        r.scopes = vec!["read:ü".to_owned(), "with space".to_owned(), "q\"uote".to_owned()];
        r.start = "sk_ü_🚀".to_owned();
        r.last4 = "%_'\"".to_owned();
        r.encrypted_key = Some("ciphertext\n'with' \"quotes\"".to_owned());
        insert(&store, r.clone()).await;
        assert_eq!(*fetch(&store, r.id).await, r, "a record owned by {owner:?} must read back equal");
        let listed = crate::fixtures::list_all(&store, keypal::ListQuery::new().owner_id(owner)).await;
        assert_eq!(sorted_ids(&listed), vec![r.id], "listing by owner {owner:?} must find exactly its key");
    }
}

/// `enabled = false`, a set `revoked_at` and the rotation links read back as given.
pub async fn disabled_revoked_and_rotated_fields_round_trip<S: Store>(store: S) {
    let created = now();
    let mut old = full_record();
    old.enabled = false;
    old.revoked_at = Some(shift(created, 3600));
    let mut new = record_for("user_full");
    let old_id = old.id;
    let new_id = new.id;
    old.rotated_to = Some(new_id);
    new.rotated_from = Some(old_id);
    insert(&store, old.clone()).await;
    insert(&store, new.clone()).await;
    assert_eq!(*fetch(&store, old_id).await, old, "a disabled, revoked, rotated record must read back equal");
    assert_eq!(*fetch(&store, new_id).await, new, "a replacement record must read back equal");
}

/// Inserting a record whose `Lookup::Id` is taken is `Duplicate`: the new record is not
/// stored, the old one is unchanged, and no event is appended.
pub async fn insert_with_taken_id_lookup_is_duplicate_and_changes_nothing<S: Store>(store: S) {
    let first = record_with_lookup(Lookup::Id("taken_id".to_owned()));
    insert(&store, first.clone()).await;
    let events = audit_len(&store).await;
    let mut second = record_for("someone_else");
    second.lookup = Lookup::Id("taken_id".to_owned());
    assert_err!(
        store.insert(second.clone(), Some(10), event(Action::Created)).await,
        StoreError::Duplicate,
        "insert with a taken id lookup"
    );
    assert!(store.get(second.id).await.expect("get failed").is_none(), "the duplicate must not be stored");
    let found = store.find(&first.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&first), "the first record must be unchanged");
    assert_eq!(audit_len(&store).await, events, "a refused insert must append no event");
    let listed = crate::fixtures::list_all(&store, keypal::ListQuery::new().owner_id("someone_else")).await;
    assert!(listed.is_empty(), "the duplicate must not be listed");
}

/// Inserting a record whose `Lookup::Digest` is taken is `Duplicate`: the new record is
/// not stored, the old one is unchanged, and no event is appended.
pub async fn insert_with_taken_digest_is_duplicate_and_changes_nothing<S: Store>(store: S) {
    let first = record();
    insert(&store, first.clone()).await;
    let events = audit_len(&store).await;
    let mut second = record_for("someone_else");
    second.lookup = first.lookup.clone();
    assert_err!(
        store.insert(second.clone(), None, event(Action::Created)).await,
        StoreError::Duplicate,
        "insert with a taken digest"
    );
    assert!(store.get(second.id).await.expect("get failed").is_none(), "the duplicate must not be stored");
    let found = store.find(&first.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&first), "the first record must be unchanged");
    assert_eq!(audit_len(&store).await, events, "a refused insert must append no event");
    let count = store.count(&keypal::ListQuery::new().include_revoked(true)).await.expect("count failed");
    assert_eq!(count, 1, "only the first record may be stored");
}

/// Inserting a record whose id is taken (with a free lookup) is `Duplicate`, and
/// changes nothing.
pub async fn insert_with_taken_record_id_is_duplicate_and_changes_nothing<S: Store>(store: S) {
    let first = full_record();
    insert(&store, first.clone()).await;
    let events = audit_len(&store).await;
    let mut second = record_for("someone_else");
    second.id = first.id;
    assert_err!(
        store.insert(second.clone(), None, event(Action::Created)).await,
        StoreError::Duplicate,
        "insert with a taken record id"
    );
    assert_eq!(*fetch(&store, first.id).await, first, "the first record must be unchanged");
    assert!(store.find(&second.lookup).await.expect("find failed").is_none(), "the duplicate must not be stored");
    assert_eq!(audit_len(&store).await, events, "a refused insert must append no event");
}

/// Hints are not unique: two records with one hint (same namespace and owner) are both
/// stored. And a lookup text is unique only within its kind: `Id("x")`, `Hint("x")`
/// and a digest can coexist.
pub async fn shared_hints_and_equal_text_of_another_lookup_kind_are_not_duplicates<S: Store>(store: S) {
    let mut a = record_with_hint("sk_live_same");
    a.owner_id = Some("u".to_owned());
    let mut b = record_with_hint("sk_live_same");
    b.owner_id = Some("u".to_owned());
    store.insert(a.clone(), Some(5), event(Action::Created)).await.expect("first record of a hint");
    store.insert(b.clone(), Some(5), event(Action::Created)).await.expect("second record of the same hint");
    let found = store.find_by_hint("sk_live_same").await.expect("find_by_hint failed");
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(sorted_ids(&found), expected, "both records of the hint must be found");

    let text = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let by_id = record_with_lookup(Lookup::Id(text.to_owned()));
    let by_hint = record_with_lookup(Lookup::Hint(text.to_owned()));
    let by_digest = record_with_lookup(Lookup::from_parts("digest", text).expect("valid digest"));
    for r in [&by_id, &by_hint, &by_digest] {
        store.insert(r.clone(), None, event(Action::Created)).await.expect("same text, other lookup kind");
    }
    let found = store.find(&by_id.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&by_id), "find(Id) must return the id record");
    let found = store.find(&by_digest.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&by_digest), "find(Digest) must return the digest record");
    let found = store.find_by_hint(text).await.expect("find_by_hint failed");
    assert_eq!(sorted_ids(&found), vec![by_hint.id], "find_by_hint must return the hint record only");
    let created = audit_all(&store, AuditQuery::new().action(Action::Created)).await;
    assert_eq!(created.len(), 5, "each insert must append one event");
}

/// `insert_many` inserts each record on its own: a record whose lookup or id is taken
/// (by a stored record or by an earlier one of the same call) is `Duplicate`, one over
/// its owner's limit (counting the records inserted before it in the call) is
/// `LimitReached`, each in its place, and the others are stored with their events.
pub async fn insert_many_stores_each_record_on_its_own<S: Store>(store: S) {
    let stored = record();
    insert(&store, stored.clone()).await;
    let events = audit_len(&store).await;

    let first = record_for("owner_many");
    let second = record_for("owner_many");
    let over_limit = record_for("owner_many");
    let mut taken = record();
    taken.lookup = stored.lookup.clone();
    let fresh = record();
    let mut repeated = record();
    repeated.lookup = fresh.lookup.clone();
    let items: Vec<Insertion> = [&first, &taken, &second, &fresh, &over_limit, &repeated]
        .into_iter()
        .map(|r| Insertion { record: r.clone(), max_active_per_owner: Some(2), event: event(Action::Imported) })
        .collect();
    let results = store.insert_many(items).await.expect("insert_many failed");

    let outcome: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(record) => format!("ok {}", record.id),
            Err(StoreError::Duplicate) => "duplicate".to_owned(),
            Err(StoreError::LimitReached { limit }) => format!("limit {limit}"),
            Err(other) => format!("unexpected {other:?}"),
        })
        .collect();
    let want = [
        format!("ok {}", first.id),
        "duplicate".to_owned(),
        format!("ok {}", second.id),
        format!("ok {}", fresh.id),
        "limit 2".to_owned(),
        "duplicate".to_owned(),
    ];
    assert_eq!(outcome, want, "insert_many must answer for each record in its place");
    for r in [&first, &second, &fresh] {
        assert_eq!(*fetch(&store, r.id).await, *r, "a record insert_many stored must read back equal");
    }
    for r in [&taken, &over_limit, &repeated] {
        assert!(store.get(r.id).await.expect("get failed").is_none(), "a refused record must not be stored");
    }
    assert_eq!(fetch(&store, stored.id).await.lookup, stored.lookup, "the holder of a taken lookup is unchanged");
    let log = audit_all(&store, AuditQuery::new()).await;
    assert_eq!(log.len(), events + 3, "one event per stored record, none for a refused one");
    let mut logged: Vec<KeyId> = log.iter().filter(|e| e.action == Action::Imported).filter_map(|e| e.key_id).collect();
    logged.sort();
    let mut want_logged = vec![first.id, second.id, fresh.id];
    want_logged.sort();
    assert_eq!(logged, want_logged, "the events are about the stored records");

    let empty = store.insert_many(Vec::new()).await.expect("insert_many of nothing failed");
    assert!(empty.is_empty(), "nothing to insert answers nothing");
}
