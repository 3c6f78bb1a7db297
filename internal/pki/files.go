package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside a CA directory; see (*CA).Save and LoadCA.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// initHint tells an operator how to create missing certificate files.
const initHint = "run `lockd certs init` first"

// Save writes the CA to dir as ca.crt (0644) and ca.key (0600), creating dir
// (0700) if needed. It refuses to overwrite an existing CA: replacing the CA
// of a running cluster would lock every node out of every other.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("save CA: encode key: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("save CA: %s already exists; refusing to overwrite a cluster CA", p)
		}
	}
	// The key goes first: if writing the certificate fails, a retry reports
	// the leftover key instead of silently pairing a new key with it.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := writeNew(certPath, ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// LoadCA reads a CA that Save wrote to dir, and checks that the key belongs
// to the certificate.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := readFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile(keyPath)
	if err != nil {
		return nil, err
	}
	der, err := decodePEM(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", certPath, err)
	}
	key, err := parseECKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", keyPath, err)
	}
	ca, err := newCA(der, key)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// WriteKeyPair writes certPEM to dir/name.crt (0644) and keyPEM to
// dir/name.key (0600), creating dir (0700) if needed. Existing files are
// replaced, so that a certificate can be re-issued in place.
func WriteKeyPair(dir, name string, certPEM, keyPEM []byte) error {
	if name == "" || name != filepath.Base(name) {
		return fmt.Errorf("write key pair: name %q must be a plain file name", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write key pair %s: %w", name, err)
	}
	keyPath := filepath.Join(dir, name+".key")
	// Remove first: WriteFile keeps the mode of an existing file, and an old
	// key file with loose permissions must not stay loose.
	if err := os.Remove(keyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), certPEM, 0o644); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	return nil
}

// writeNew creates path with perm, failing if it exists, and syncs it so
// that a crash right after does not leave an empty key behind.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readFile reads path and names it in any error; a missing file also tells
// the operator how to create it.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return data, nil
	}
	// The *PathError already names the file; unwrap it so that the path is
	// not printed twice. errors.Is(err, fs.ErrNotExist) still holds.
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w: %s", path, err, initHint)
	}
	return nil, fmt.Errorf("read %s: %w", path, err)
}

// decodePEM returns the DER bytes of the first PEM block of type typ.
func decodePEM(data []byte, typ string) ([]byte, error) {
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
	return nil, fmt.Errorf("no PEM %s block", typ)
}

// parseECKey parses an ECDSA private key in PKCS #8 ("PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY", as openssl writes it) PEM form.
func parseECKey(data []byte) (*ecdsa.PrivateKey, error) {
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("key is a %T, want an ECDSA key", k)
			}
			return ec, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		}
	}
	return nil, errors.New("no PEM PRIVATE KEY block")
}
