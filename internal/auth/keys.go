package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinHMACSecret is the shortest HMAC secret taken, in bytes: 256 bits, the
// output of SHA-256 (RFC 7518 3.2 asks for at least the hash's size).
const MinHMACSecret = 32

// MinRSABits is the smallest RSA modulus taken (RFC 7518 3.3 and 3.5 ask
// for 2048 bits).
const MinRSABits = 2048

// LoadHMACSecret reads an HMAC secret from path: the file's bytes, with
// surrounding white space trimmed, are the secret as they are (not decoded).
// A secret of fewer than MinHMACSecret bytes is refused.
func LoadHMACSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := bytes.TrimSpace(data)
	if len(s) < MinHMACSecret {
		return nil, fmt.Errorf("%s holds %d bytes (after trimming white space); an HMAC secret needs at least %d: make one with `head -c 48 /dev/urandom | base64 > %s`", path, len(s), MinHMACSecret, path)
	}
	return s, nil
}

// LoadPublicKeys reads the PEM blocks of path: public keys ("PUBLIC KEY",
// "RSA PUBLIC KEY") or certificates, whose keys are taken. Each must be
// RSA of at least MinRSABits (for RS*/PS* tokens), ECDSA on P-256, P-384
// or P-521 (ES256, ES384, ES512) or Ed25519 (EdDSA). A private key, any
// other block, or text outside the blocks is refused.
func LoadPublicKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []crypto.PublicKey
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		k, err := parsePEMBlock(b)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d (%s): %w", path, n, b.Type, err)
		}
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("%s: no PEM block: want public keys as -----BEGIN PUBLIC KEY----- blocks (openssl pkey -pubout prints one)", path)
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, fmt.Errorf("%s: text after PEM block %d that is not a PEM block", path, len(keys))
	}
	return keys, nil
}

func parsePEMBlock(b *pem.Block) (crypto.PublicKey, error) {
	var k any
	var err error
	switch {
	case b.Type == "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(b.Bytes)
	case b.Type == "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(b.Bytes)
	case b.Type == "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(b.Bytes); err == nil {
			k = c.PublicKey
		}
	case strings.Contains(b.Type, "PRIVATE KEY"):
		return nil, errors.New("a private key: give only the public key (openssl pkey -in KEY -pubout)")
	default:
		return nil, errors.New("not a public key or certificate")
	}
	if err != nil {
		return nil, err
	}
	return k, checkPublicKey(k)
}

// checkPublicKey reports whether k is a key a token may be verified with.
func checkPublicKey(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("an RSA key of %d bits: want at least %d", k.N.BitLen(), MinRSABits)
		}
	case *ecdsa.PublicKey:
		if ecdsaAlg(k) == "" {
			return fmt.Errorf("an ECDSA key on %s: want P-256, P-384 or P-521", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("an Ed25519 key of %d bytes", len(k))
		}
	default:
		return fmt.Errorf("a %T key: want RSA, ECDSA or Ed25519", k)
	}
	return nil
}

// ecdsaAlg is the one alg a key on k's curve signs with ("" for other
// curves): ES256 is P-256 only, and so on (RFC 7518 3.4).
func ecdsaAlg(k *ecdsa.PublicKey) string {
	switch k.Curve {
	case elliptic.P256():
		return "ES256"
	case elliptic.P384():
		return "ES384"
	case elliptic.P521():
		return "ES512"
	}
	return ""
}

// keyFits reports whether a token signed with alg may be verified with k:
// the key's type decides the algs, so an HS256 token is never checked
// against a public key's bytes, nor an ES256 one against a P-384 key.
func keyFits(alg string, k crypto.PublicKey) bool {
	switch k := k.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		return alg == ecdsaAlg(k)
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// isHMAC reports whether alg is one of the HMAC algs.
func isHMAC(alg string) bool { return alg == "HS256" || alg == "HS384" || alg == "HS512" }

// algs are the algs chatr takes, every other one (none included) is
// refused before any key is looked at.
var algs = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
