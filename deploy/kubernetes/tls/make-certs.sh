#!/bin/sh
# A CA and the controller's certificate, for a cluster that has no certificate manager of its own:
#   deploy/kubernetes/tls/make-certs.sh DIR [SERVICE [NAMESPACE]]
# writes DIR/ca.crt (what agents trust: the ConfigMap underlay-ca), DIR/ca.key (keep it, or throw it
# away once the certificate is made) and DIR/tls.crt, DIR/tls.key (the Secret underlay-controller-tls).
# The certificate names the controller's Service (SERVICE.NAMESPACE.svc and .svc.cluster.local): the
# name agents check, whichever ClusterIP they dial. EC P-256 keys; openssl only.
set -eu
dir=${1:?usage: make-certs.sh DIR [SERVICE [NAMESPACE]]}
service=${2:-underlay-controller}
namespace=${3:-underlay-system}
days=${DAYS:-365}
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$((days * 10))" \
    -subj "/CN=underlay CA" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$service.$namespace.svc" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$service" "$namespace" "$service" "$namespace" > "$dir/tls.ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days "$days" \
    -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null
rm -f "$dir/tls.csr" "$dir/tls.ext" "$dir/ca.srl"
chmod 644 "$dir/ca.crt" "$dir/tls.crt"
echo "$dir: ca.crt ca.key tls.crt tls.key for $service.$namespace.svc"
