//! `keyquorum encrypt | decrypt | reencrypt | datakey | sign | verify | pubkey | random`: the
//! cryptographic calls, on files or standard input and output.

use clap::{Args, Subcommand};
use client::pb;

use crate::common::{context, parse_pair, read_input, write_output, Common};
use crate::output::{b64, Output};

#[derive(Debug, Clone, Args)]
pub(crate) struct CryptoIo {
    /// Encryption context, repeatable: --context k=v.
    #[arg(long, value_parser = parse_pair)]
    pub(crate) context: Vec<(String, String)>,
    /// Input file, or - for stdin.
    #[arg(long = "in", default_value = "-")]
    pub(crate) input: String,
    /// Output file, or - for stdout.
    #[arg(long = "out", default_value = "-")]
    pub(crate) output_file: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CryptoCommand {
    /// Encrypt up to 64 KiB under a symmetric key.
    Encrypt {
        #[arg(long)]
        key: String,
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Decrypt a ciphertext (the key is named inside it).
    Decrypt {
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Re-encrypt a ciphertext under a key's primary version (or another key) without the plaintext leaving the cluster.
    Reencrypt {
        /// Destination key (default: the ciphertext's own key).
        #[arg(long)]
        key: Option<String>,
        /// Encryption context of the new ciphertext (default: the same as the source).
        #[arg(long = "dest-context", value_parser = parse_pair)]
        dest_context: Vec<(String, String)>,
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Generate a data key for envelope encryption.
    Datakey {
        #[arg(long)]
        key: String,
        #[arg(long, value_parser = parse_pair)]
        context: Vec<(String, String)>,
        #[arg(long, default_value_t = 32)]
        bytes: u32,
        /// Return only the encrypted data key.
        #[arg(long)]
        without_plaintext: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Sign a message with an ECC_NIST_P384 key (ECDSA, SHA-384); writes a DER signature.
    Sign {
        #[arg(long)]
        key: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long = "out")]
        output_file: String,
        #[command(flatten)]
        common: Common,
    },
    /// Verify a signature.
    Verify {
        #[arg(long)]
        key: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        signature: String,
        #[arg(long, default_value_t = 0)]
        key_version: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Print a signing key's public key (PEM).
    Pubkey {
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Random bytes from the cluster's CSPRNG.
    Random {
        #[arg(long, default_value_t = 32)]
        bytes: u32,
        #[command(flatten)]
        common: Common,
    },
}

/// A JSON line into the output file.
fn write_json(path: &str, value: serde_json::Value) -> anyhow::Result<()> {
    write_output(path, format!("{value}\n").as_bytes())
}

pub(crate) async fn run(command: CryptoCommand) -> anyhow::Result<()> {
    match command {
        CryptoCommand::Encrypt { key, io, common } => {
            let req = pb::EncryptRequest {
                key,
                plaintext: read_input(&io.input)?,
                encryption_context: context(&io.context),
                consistency: None,
            };
            let r = common.client()?.encrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.ciphertext),
                Output::Json => write_json(
                    &io.output_file,
                    serde_json::json!({"ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version}),
                ),
            }
        }
        CryptoCommand::Decrypt { io, common } => {
            let req = pb::DecryptRequest {
                ciphertext: read_input(&io.input)?,
                encryption_context: context(&io.context),
                consistency: None,
                key: String::new(),
            };
            let r = common.client()?.decrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.plaintext),
                Output::Json => write_json(
                    &io.output_file,
                    serde_json::json!({"plaintext": b64(&r.plaintext), "key_id": r.key_id, "key_version": r.key_version}),
                ),
            }
        }
        CryptoCommand::Reencrypt { key, dest_context, io, common } => {
            let source = context(&io.context);
            let req = pb::ReEncryptRequest {
                ciphertext: read_input(&io.input)?,
                destination_encryption_context: if dest_context.is_empty() {
                    source.clone()
                } else {
                    context(&dest_context)
                },
                source_encryption_context: source,
                destination_key: key.unwrap_or_default(),
                consistency: None,
            };
            let r = common.client()?.re_encrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.ciphertext),
                Output::Json => write_json(
                    &io.output_file,
                    serde_json::json!({"ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version,
                        "source_key_id": r.source_key_id, "source_key_version": r.source_key_version}),
                ),
            }
        }
        CryptoCommand::Datakey { key, context: ctx, bytes, without_plaintext, common } => {
            let c = common.client()?;
            let req = pb::GenerateDataKeyRequest {
                key,
                encryption_context: context(&ctx),
                number_of_bytes: bytes,
                consistency: None,
            };
            let r = if without_plaintext {
                c.generate_data_key_without_plaintext(req).await?
            } else {
                c.generate_data_key(req).await?
            };
            match common.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"plaintext": b64(&r.plaintext), "ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version})
                ),
                Output::Text => {
                    if !without_plaintext {
                        println!("plaintext:  {}", b64(&r.plaintext));
                    }
                    println!("ciphertext: {}", b64(&r.ciphertext));
                    println!("key:        {} v{}", r.key_id, r.key_version);
                }
            }
            Ok(())
        }
        CryptoCommand::Sign { key, input, output_file, common } => {
            let req = pb::SignRequest { key, message: read_input(&input)?, consistency: None };
            let r = common.client()?.sign(req).await?;
            write_output(&output_file, &r.signature)?;
            if common.output == Output::Json {
                eprintln!(
                    "{}",
                    serde_json::json!({"key_id": r.key_id, "key_version": r.key_version, "signature": b64(&r.signature)})
                );
            }
            Ok(())
        }
        CryptoCommand::Verify { key, input, signature, key_version, common } => {
            let req = pb::VerifyRequest {
                key,
                message: read_input(&input)?,
                signature: read_input(&signature)?,
                key_version,
                consistency: None,
            };
            let r = common.client()?.verify(req).await?;
            match common.output {
                Output::Json => println!("{}", serde_json::json!({"valid": r.valid})),
                Output::Text => println!("{}", if r.valid { "valid" } else { "INVALID" }),
            }
            if !r.valid {
                std::process::exit(1);
            }
            Ok(())
        }
        CryptoCommand::Pubkey { key, common } => {
            let req = pb::GetPublicKeyRequest { key, key_version: 0, consistency: None };
            let r = common.client()?.get_public_key(req).await?;
            match common.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"key_id": r.key_id, "key_version": r.key_version, "public_key_der": b64(&r.public_key_der), "public_key_pem": r.public_key_pem})
                ),
                Output::Text => print!("{}", r.public_key_pem),
            }
            Ok(())
        }
        CryptoCommand::Random { bytes, common } => {
            let r = common.client()?.generate_random(pb::GenerateRandomRequest { number_of_bytes: bytes }).await?;
            match common.output {
                Output::Json => println!("{}", serde_json::json!({"random": b64(&r.random)})),
                Output::Text => println!("{}", hex::encode(&r.random)),
            }
            Ok(())
        }
    }
}
