package auth

import (
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what Sign puts in a token.
type Claims struct {
	Sub  string // the user id (required)
	Name string // display name; left out, Verify takes Sub
	// Rooms are the patterns of the rooms the holder may join and send to:
	// nil leaves the claim out (every room); an empty, non-nil list allows
	// none but those of Read.
	Rooms []string
	Read  []string // patterns of rooms the holder may join read-only
	Admin bool
	// Issuer and Audience become iss and aud when set.
	Issuer, Audience string
	// TTL is how long the token is valid from now (exp): at least a second.
	TTL time.Duration
}

// Sign makes a token of claims signed with the HMAC secret, with alg
// HS256, HS384 or HS512: for `chatr token`, scripts and tests. It applies
// the rules Verify does, so that what it signs a Verifier with the same
// secret takes.
func Sign(secret []byte, alg string, c Claims) (string, error) {
	if !isHMAC(alg) {
		return "", fmt.Errorf("alg %q: want HS256, HS384 or HS512", alg)
	}
	if len(secret) < MinHMACSecret {
		return "", fmt.Errorf("an HMAC secret of %d bytes: want at least %d", len(secret), MinHMACSecret)
	}
	if c.TTL < time.Second {
		return "", fmt.Errorf("ttl %v: must be at least 1s (exp counts seconds)", c.TTL)
	}
	now := time.Now()
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Sub,
			Issuer:    c.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(c.TTL)),
		},
		Name: c.Name, Rooms: slices.Clone(c.Rooms), Read: slices.Clone(c.Read), Admin: c.Admin,
	}
	if c.Audience != "" {
		tc.Audience = jwt.ClaimStrings{c.Audience}
	}
	if err := tc.check(); err != nil {
		return "", err
	}
	return jwt.NewWithClaims(jwt.GetSigningMethod(alg), tc).SignedString(secret)
}
