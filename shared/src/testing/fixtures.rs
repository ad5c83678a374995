//! The made-up credentials that tests, benches and the sandbox configure accounts with, each
//! defined once here. None belongs to a real corp or account. (The recorded test vectors under
//! `fixtures/` carry their own copies.)

/// Made-up WeCom app callback Token, for tests and the sandbox.
pub const WECOM_TOKEN: &str = "Wx8r1dgeT0ken";
/// Made-up WeCom app EncodingAESKey, for tests and the sandbox.
pub const WECOM_AES_KEY: &str = "HIu2lVPN96GQjSpUjTfRQ7zdxNAM4i9RKwPU7LosXnv";
/// Made-up WeCom CorpID (the receive id of [`WECOM_AES_KEY`] ciphertexts), for tests and the sandbox.
pub const WECOM_CORP_ID: &str = "ww5f2d8c1a9e3b7046";

/// Made-up Official Account callback Token, for tests and the sandbox.
pub const OA_TOKEN: &str = "oaBridgeTok2024";
/// Made-up Official Account EncodingAESKey, for tests and the sandbox.
pub const OA_AES_KEY: &str = "RfHDCFpLM98By6wp04UOhB6dpmdAqt40QAHcQiASytv";
/// Made-up Official Account AppID (the receive id of [`OA_AES_KEY`] ciphertexts), for tests and the sandbox.
pub const OA_APP_ID: &str = "wx6d1c9e8f2a3b4c57";

/// Made-up Token of the Official Account the 5-second-window simulator plays, for tests and the sandbox.
pub const SIMULATED_OA_TOKEN: &str = "simulatedToken";
/// Made-up AppID of the Official Account the 5-second-window simulator plays, for tests and the sandbox.
pub const SIMULATED_OA_APP_ID: &str = "wxsimulated00001";
