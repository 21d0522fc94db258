//! Project Wycheproof vectors (`tests/vectors/wycheproof`, copied with their licence) through
//! keyquorum's own crypto API: every `valid` case must be accepted and every `invalid` case
//! rejected.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;

use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wycheproof").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex_field(case: &Value, field: &str) -> Vec<u8> {
    hex::decode(case[field].as_str().unwrap_or_else(|| panic!("field {field}"))).unwrap()
}

fn cases(doc: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap().iter().map(move |t| (g, t)))
}

#[test]
fn aes_gcm_siv_vectors_valid_accepted_invalid_rejected() {
    let doc = vectors("aes_gcm_siv_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for (_, case) in cases(&doc) {
        let (key, iv, aad, msg) =
            (hex_field(case, "key"), hex_field(case, "iv"), hex_field(case, "aad"), hex_field(case, "msg"));
        let mut sealed = hex_field(case, "ct");
        sealed.extend(hex_field(case, "tag"));
        let id = &case["tcId"];
        let opened = crypto::aead::open(&key, &iv, &aad, &sealed);
        match case["result"].as_str().unwrap() {
            "valid" => {
                valid += 1;
                assert_eq!(opened.as_deref(), Ok(&msg[..]), "tcId {id}: valid case must decrypt");
                let resealed = crypto::aead::seal(&key, &iv, &aad, &msg).unwrap();
                assert_eq!(resealed, sealed, "tcId {id}: encryption must match the vector");
            }
            "invalid" => {
                invalid += 1;
                assert!(opened.is_err(), "tcId {id}: invalid case must be rejected");
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        }
    }
    assert!(valid > 100 && invalid > 50, "ran {valid} valid and {invalid} invalid cases");
}

type Verify = fn(&[u8], &[u8], &[u8]) -> Result<(), crypto::CryptoError>;

fn ecdsa_file(name: &str, verify: Verify) {
    let doc = vectors(name);
    let (mut valid, mut invalid) = (0, 0);
    for (group, case) in cases(&doc) {
        let public_key = hex::decode(group["publicKeyDer"].as_str().unwrap()).unwrap();
        let (msg, sig) = (hex_field(case, "msg"), hex_field(case, "sig"));
        let id = &case["tcId"];
        let result = verify(&public_key, &msg, &sig);
        match case["result"].as_str().unwrap() {
            "valid" => {
                valid += 1;
                assert_eq!(result, Ok(()), "tcId {id} ({}): valid signature rejected", case["comment"]);
            }
            "invalid" => {
                invalid += 1;
                assert!(result.is_err(), "tcId {id} ({}): invalid signature accepted", case["comment"]);
            }
            _ => {} // "acceptable": either answer is allowed.
        }
    }
    assert!(valid > 100 && invalid > 50, "{name}: ran {valid} valid and {invalid} invalid cases");
}

#[test]
fn ecdsa_p384_der_vectors_valid_accepted_invalid_rejected() {
    ecdsa_file("ecdsa_secp384r1_sha384_test.json", crypto::ecdsa::verify_der);
}

#[test]
fn ecdsa_p384_p1363_vectors_valid_accepted_invalid_rejected() {
    ecdsa_file("ecdsa_secp384r1_sha384_p1363_test.json", crypto::ecdsa::verify_p1363);
}
