//! Hello broker: the README's example, kept compiling by `cargo clippy --all-targets`.
//!
//! `cargo run --release -- demo` in one terminal, then
//! `cargo run -p clerk-broker-client --example hello [URL]`.

#[tokio::main]
async fn main() -> Result<(), clerk_broker_client::Error> {
    let url = std::env::args().nth(1);
    let url = url.as_deref().unwrap_or(clerk_broker_client::DEFAULT_URL);
    let broker = clerk_broker_client::Client::connect(url).await?;
    let user = broker.get_user("user_WjqhESHrprLoQRaGgNMIoIuAr9n").await?;
    println!("{} {:?}", user.id, user.primary_email_address);
    Ok(())
}
