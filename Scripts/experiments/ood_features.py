"""Which features tell unseen tissue from the training tiles? Embeds lung and EBHI tiles (in
domain) and the other tile sets (unseen organs) with a CLIP checkpoint's image tower, splits the
in-domain sets 60/40 by group, fits class means and a shared covariance on the 60%, sets the
limit at the 95th (and 99th) percentile of the held-out in-domain distances, and prints the
share of each unseen set past it, for the projected embedding (what Eosin's out-of-domain check
uses), the pooled output, the patch-token mean, and pooled + patch mean; then per-class limits
against one global limit; then the projected and pooled + patch distances together.

    pip install 'torch==2.13.0+cpu' transformers pillow
    python3 Scripts/experiments/ood_features.py Weights/eosin-small-v2/clip 160

Tiles are resized whole with PIL (bilinear), not area-downsampled and centre-cropped as Eosin
does, and the split is this script's own: its shares differ from EVALUATION.md's, which
measures the check Eosin ships; compare the rows with each other.
"""
import sys
import torch, numpy as np, csv, os
from PIL import Image
from transformers import CLIPModel
torch.set_num_threads(2)
W, S = sys.argv[1], int(sys.argv[2])
m=CLIPModel.from_pretrained(W).eval()
mean=np.array([0.48145466,0.4578275,0.40821073]);std=np.array([0.26862954,0.26130258,0.27577711])
root=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data', 'tiles')
rng=np.random.default_rng(0)
def rows(ds):
    r=list(csv.reader(open(f'{root}/{ds}/manifest.csv')))[1:]
    return [(x[0],x[1],x[-1]) for x in r]
out={}
for ds,cap in [('lc25000-lung',1200),('ebhi-seg',1200),('prostate-panda',400),('endometrium',400),('brain-glioma',91),('breakhis-400x',40),('camelyon16-lymph',32),('monuseg-organs',44)]:
    r=rows(ds); idx=rng.permutation(len(r))[:cap]; r=[r[i] for i in idx]
    P,C,Mp,L,G=[],[],[],[],[]
    for i in range(0,len(r),64):
        ims=[]
        for p,l,g in r[i:i+64]:
            im=Image.open(f'{root}/{ds}/{p}').convert('RGB').resize((S,S),Image.BILINEAR)
            ims.append((np.asarray(im)/255.-mean)/std); L.append(l); G.append(g)
        x=torch.tensor(np.stack(ims).transpose(0,3,1,2),dtype=torch.float32)
        with torch.no_grad():
            vo=m.vision_model(pixel_values=x)
            pooled=vo.pooler_output; proj=m.visual_projection(pooled)
            patch=vo.last_hidden_state[:,1:].mean(1)
        P.append(proj.numpy()); C.append(pooled.numpy()); Mp.append(patch.numpy())
    out[ds]=dict(proj=np.concatenate(P),pool=np.concatenate(C),patch=np.concatenate(Mp),label=np.array(L),group=np.array(G))
    print(ds,len(L),flush=True)
F = out

rng=np.random.default_rng(1)
ind=['lc25000-lung','ebhi-seg']; ood=['prostate-panda','endometrium','brain-glioma','breakhis-400x','camelyon16-lymph','monuseg-organs']
split={}
for ds in ind:
    g=np.unique(F[ds]['group']); tr=set(rng.choice(g,int(.6*len(g)),replace=False)); split[ds]=np.array([x in tr for x in F[ds]['group']])
def feat(ds,kind):
    d=F[ds]
    if kind=='pool+patch': X=np.concatenate([d['pool'],d['patch']],1)
    else: X=d[kind]
    return X.astype(np.float64)


for kind in ['proj','pool','patch','pool+patch']:
    fe=(lambda ds: np.concatenate([feat(ds,'proj')*10,feat(ds,'pool+patch')],1)) if kind=='all' else (lambda ds,k=kind: feat(ds,k))
    Xtr=np.concatenate([fe(ds)[split[ds]] for ds in ind]); ytr=np.concatenate([np.char.add(ds,F[ds]['label'][split[ds]]) for ds in ind])
    Xte=np.concatenate([fe(ds)[~split[ds]] for ds in ind])
    ks=np.unique(ytr); mu=np.stack([Xtr[ytr==k].mean(0) for k in ks]); R=Xtr-mu[np.searchsorted(ks,ytr)]
    D=Xtr.shape[1]
    cov=R.T@R/len(R)+1e-4*np.eye(D); Pm=np.linalg.inv(cov)
    m0=Xtr.mean(0); R0=Xtr-m0; P0=np.linalg.inv(R0.T@R0/len(R0)+1e-4*np.eye(D))
    def maha(X):
        d=X[:,None]-mu[None]; return np.sqrt(np.einsum('nkd,de,nke->nk',d,Pm,d)).min(1)
    def rmaha(X):
        d=X[:,None]-mu[None]; dk=np.einsum('nkd,de,nke->nk',d,Pm,d).min(1); e=X-m0; return dk-np.einsum('nd,de,ne->n',e,P0,e)
    for name,fn in [('maha',maha),('rmaha',rmaha)]:
        s=fn(Xte)
        for q in [0.95,0.99]:
            t=np.quantile(s,q)
            print('%-10s %-7s q%.2f'%(kind,name,q),' '.join('%s:%.2f'%(ds[:8],(fn(fe(ds))>t).mean()) for ds in ood))

# Per-class limits: the 95th percentile of held-out in-domain distances to each nearest class
# mean (classes with fewer than 20 such tiles keep the global limit), against one global limit.
for kind in ['proj', 'pool+patch']:
    Xtr = np.concatenate([feat(ds, kind)[split[ds]] for ds in ind])
    ytr = np.concatenate([np.char.add(ds, F[ds]['label'][split[ds]]) for ds in ind])
    Xte = np.concatenate([feat(ds, kind)[~split[ds]] for ds in ind])
    ks = np.unique(ytr); mu = np.stack([Xtr[ytr == k].mean(0) for k in ks]); R = Xtr - mu[np.searchsorted(ks, ytr)]
    Pm = np.linalg.inv(R.T @ R / len(R) + 1e-4 * np.eye(Xtr.shape[1]))
    def nearest(X):
        d = X[:, None] - mu[None]; D = np.sqrt(np.einsum('nkd,de,nke->nk', d, Pm, d)); return D.min(1), D.argmin(1)
    s, nn = nearest(Xte)
    g = np.quantile(s, 0.95)
    L = np.array([np.quantile(s[nn == k], 0.95) if (nn == k).sum() >= 20 else g for k in range(len(ks))])
    print('%-10s per-class vs global limit; in-domain flagged %.3f vs %.3f' % (kind, (s > L[nn]).mean(), (s > g).mean()))
    for ds in ood:
        a, b = nearest(feat(ds, kind))
        print('   %-18s per-class %.2f  global %.2f' % (ds, (a > L[b]).mean(), (a > g).mean()))

# Both distances together: a tile is flagged when either is past its own limit, with the two
# quantiles chosen so that about 5% of held-out in-domain tiles are flagged; against the
# backbone alone at its 95th percentile (the first row).

def fitk(kind):
    Xtr=np.concatenate([feat(ds,kind)[split[ds]] for ds in ind]); ytr=np.concatenate([np.char.add(ds,F[ds]['label'][split[ds]]) for ds in ind])
    ks=np.unique(ytr); mu=np.stack([Xtr[ytr==k].mean(0) for k in ks]); R=Xtr-mu[np.searchsorted(ks,ytr)]
    Pm=np.linalg.inv(R.T@R/len(R)+1e-4*np.eye(Xtr.shape[1]))
    def maha(X):
        d=X[:,None]-mu[None]; return np.sqrt(np.einsum('nkd,de,nke->nk',d,Pm,d)).min(1)
    return maha
mp=fitk('proj'); mb=fitk('pool+patch')
Xte_p=np.concatenate([feat(ds,'proj')[~split[ds]] for ds in ind]); Xte_b=np.concatenate([feat(ds,'pool+patch')[~split[ds]] for ds in ind])
sp=mp(Xte_p); sb=mb(Xte_b)
for qb,qp in [(0.95,1.0),(0.975,0.975),(0.97,0.98),(0.96,0.99)]:
    tb=np.quantile(sb,qb); tp=np.quantile(sp,qp) if qp<1 else np.inf
    ind_rate=((sb>tb)|(sp>tp)).mean()
    print('qb %.3f qp %.3f in-domain %.3f'%(qb,qp,ind_rate),' '.join('%s:%.2f'%(ds[:8],((mb(feat(ds,'pool+patch'))>tb)|(mp(feat(ds,'proj'))>tp)).mean()) for ds in ood))
