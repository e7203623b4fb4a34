use utoipa::OpenApi;
#[test]
fn dump() {
    let d = serde_json::to_value(keypal_server::ApiDoc::openapi()).unwrap();
    let mut out = serde_json::json!({});
    out["path"] = d["paths"]["/v1/apps/{id}/keys/import"].clone();
    for n in ["ImportRequest", "ImportItem", "ImportedKey", "ImportHash", "ImportLines", "ImportReport", "ImportResult", "ImportStatus", "ImportHashAlgorithm"] {
        out[n] = d["components"]["schemas"][n].clone();
    }
    std::fs::write("/tmp/importdoc.json", serde_json::to_string_pretty(&out).unwrap()).unwrap();
}
